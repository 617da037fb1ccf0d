/**
 * Base class of every apex command: `--json` envelope, typed errors → exit codes, secret
 * redaction, and SIGINT → exit 130. Subclasses implement `execute()` and return a plain object.
 */
import { Command, Flags } from '@oclif/core';
import { ApexError, InterruptedError, toApexError } from '../errors.js';
import { redact, redactDeep } from '../util/secrets.js';
import { createProgress, type Progress } from './progress.js';
import { didYouMean } from '../util/did-you-mean.js';

export interface JsonEnvelope<T> {
  ok: boolean;
  data?: T;
  warnings?: string[];
  error?: { code: string; message: string; exit: number };
}

export abstract class ApexCommand<T extends object = object> extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = {
    quiet: Flags.boolean({ char: 'q', description: 'No progress output on stderr.', default: false }),
  };

  protected warnings: string[] = [];
  protected progress!: Progress;
  /** Aborted on SIGINT/SIGTERM; long-running library calls poll it and save state. */
  protected readonly abort = new AbortController();
  private signalHandler?: (sig: NodeJS.Signals) => void;

  protected abstract execute(): Promise<T>;

  override async init(): Promise<void> {
    await super.init();
    const quiet = this.argv.includes('--quiet') || this.argv.includes('-q');
    this.progress = createProgress({ quiet });
    let count = 0;
    this.signalHandler = (sig) => {
      count += 1;
      if (count > 1) process.exit(130); // second Ctrl-C: leave now
      this.abort.abort(new InterruptedError(`interrupted by ${sig}`));
    };
    process.on('SIGINT', this.signalHandler);
    process.on('SIGTERM', this.signalHandler);
  }

  /**
   * Set by a command whose result is complete but reports a failure of its input (inspect's
   * validation): the command exits with this error's code and `--json` keeps the data.
   */
  protected outcomeError?: ApexError;

  override async run(): Promise<JsonEnvelope<T>> {
    const data = await this.execute();
    const e = this.outcomeError;
    if (e === undefined) return { ok: true, data, warnings: this.warnings };
    const message = redact(e.message);
    process.exitCode = e.exit;
    if (!this.jsonEnabled()) process.stderr.write(`apex: error [${e.code}]: ${message}\n`);
    return { ok: false, data, warnings: this.warnings, error: { code: e.code, message, exit: e.exit } };
  }

  /** Warnings go to stderr immediately and into the `--json` envelope. */
  protected note(message: string): void {
    const text = redact(message);
    // The same warning from two loads (training data and held-out split) is said once.
    if (this.warnings.includes(text)) return;
    this.warnings.push(text);
    if (!this.jsonEnabled()) process.stderr.write(`warning: ${text}\n`);
  }

  /** Human output goes to stdout only without `--json`. */
  protected say(message = ''): void {
    if (!this.jsonEnabled()) process.stdout.write(`${redact(message)}\n`);
  }

  protected override toSuccessJson(result: unknown): unknown {
    return redactDeep(result);
  }

  override logJson(json: unknown): void {
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  }

  override async catch(err: unknown): Promise<void> {
    this.progress?.stop();
    const e: ApexError = this.abort.signal.aborted && !(err instanceof ApexError) ? new InterruptedError() : toApexError(err);
    const message = this.withFlagSuggestion(redact(e.message));
    process.exitCode = e.exit;
    if (this.jsonEnabled()) {
      this.logJson({ ok: false, error: { code: e.code, message, exit: e.exit } });
    } else {
      process.stderr.write(`apex: error [${e.code}]: ${message}\n`);
      if (e.exit === 1 && process.env.APEX_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${redact(err.stack)}\n`);
    }
  }

  /** oclif's "Nonexistent flag: --setps" with the closest flag of this command, as mistyped commands and config keys get. */
  private withFlagSuggestion(message: string): string {
    const m = /^Nonexistent flags?: --([\w-]+)/.exec(message);
    if (!m) return message;
    const flags = Object.keys((this.constructor as { flags?: Record<string, unknown> }).flags ?? {});
    const near = didYouMean(m[1]!, flags);
    return near === undefined ? message : message.replace(/^(Nonexistent flags?: [^\n]*)/, `$1 (did you mean --${near}?)`);
  }

  override async finally(err: Error | undefined): Promise<void> {
    if (this.signalHandler) {
      process.off('SIGINT', this.signalHandler);
      process.off('SIGTERM', this.signalHandler);
    }
    await super.finally(err);
  }
}
