/**
 * Base class of every apex command: `--json` envelope, typed errors → exit codes, secret
 * redaction, and SIGINT → exit 130. Subclasses implement `execute()` and return a plain object.
 */
import { Command, Flags } from '@oclif/core';
import { ApexError, InterruptedError, toApexError } from '../errors.js';
import { activeWasmHeapBytes, isWasmRuntimeError, wasmHeapExhaustion } from '../model/wasm-heap-exhaustion.js';
import { redact, redactDeep } from '../util/secrets.js';
import { createProgress, type Progress } from './progress.js';
import { didYouMean } from '../util/did-you-mean.js';

export interface JsonEnvelope<T> {
  ok: boolean;
  data?: T;
  warnings?: string[];
  error?: { code: string; message: string; exit: number };
}

/** What bin/run.js notes of SIGINT/SIGTERM before a command has installed its handlers. */
interface EarlySignals {
  readonly signals: NodeJS.Signals[];
  readonly listener: (sig: NodeJS.Signals) => void;
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
      if (count > 1) {
        // A second signal: leave now. A checkpoint or output being written is abandoned (they are
        // written to temporary names first, so the previous ones stay), but the caller still gets
        // the documented answer: the --json envelope on stdout, or the error line on stderr.
        this.progress?.stop();
        const error = { code: 'INTERRUPTED', message: `interrupted again by ${sig}: left at once, without finishing what was being saved (the previous checkpoint or output is kept)`, exit: 130 };
        if (this.jsonEnabled()) this.logJson({ ok: false, ...(this.warnings.length > 0 ? { warnings: this.warnings } : {}), error });
        else process.stderr.write(`apex: error [${error.code}]: ${error.message}\n`);
        process.exit(130);
      }
      this.abort.abort(new InterruptedError(`interrupted by ${sig}`));
    };
    process.on('SIGINT', this.signalHandler);
    process.on('SIGTERM', this.signalHandler);
    // Signals that came while the command was loading (bin/run.js noted them): handled now, as if
    // they came this instant; bin/run.js's listener is no longer needed.
    const early = (globalThis as { __apexEarlySignals?: EarlySignals }).__apexEarlySignals;
    if (early !== undefined) {
      process.off('SIGINT', early.listener);
      process.off('SIGTERM', early.listener);
      for (const sig of early.signals.splice(0)) this.signalHandler(sig);
    }
  }

  /**
   * Set by a command whose result is complete but reports a failure of its input (inspect's
   * validation): the command exits with this error's code and `--json` keeps the data.
   */
  protected outcomeError?: ApexError;

  override async run(): Promise<JsonEnvelope<T>> {
    const data = await this.execute();
    // A signal during work that does not poll it (writing the last file, printing) still means
    // "interrupted": the caller asked to stop and must not read ok: true.
    if (this.abort.signal.aborted) throw new InterruptedError(`${String((this.abort.signal.reason as Error | undefined)?.message ?? 'interrupted')} after the work had finished; its outputs are complete`);
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
    const e: ApexError =
      this.abort.signal.aborted && !(err instanceof ApexError)
        ? new InterruptedError()
        : ((isWasmRuntimeError(err) ? wasmHeapExhaustion(err, await activeWasmHeapBytes()) : undefined) ?? toApexError(err));
    const message = this.withFlagSuggestion(redact(e.message));
    process.exitCode = e.exit;
    if (this.jsonEnabled()) {
      // Warnings said before the failure (a chat-template fallback, truncated data) can explain it.
      this.logJson({ ok: false, ...(this.warnings.length > 0 ? { warnings: this.warnings } : {}), error: { code: e.code, message, exit: e.exit } });
    } else {
      process.stderr.write(`apex: error [${e.code}]: ${message}\n`);
    }
    // On stderr in both modes: --json keeps stdout to the envelope, and CI jobs run with --json.
    if (e.exit === 1 && debugRequested(process.env.APEX_DEBUG) && err instanceof Error && err.stack) process.stderr.write(`${redact(err.stack)}\n`);
  }

  /** oclif's "Nonexistent flag: --setps" with the closest flag of this command, as mistyped commands and config keys get. */
  private withFlagSuggestion(message: string): string {
    const m = /^Nonexistent flags?: --([\w-]+)/.exec(message);
    if (!m) return message;
    const flags = Object.keys((this.constructor as { flags?: Record<string, unknown> }).flags ?? {});
    const near = didYouMean(m[1]!, flags);
    return near === undefined ? message : message.replace(/^(Nonexistent flags?: [^\n]*)/, `$1 (did you mean --${near}?)`);
  }

  /**
   * The signal handlers stay until oclif has printed the `--json` envelope, which it does after
   * finally(): without a handler a signal in that instant would kill the process mid-write (a cut
   * envelope, no exit code of ours); with one, the synchronous write completes first and the
   * signal finds the work done.
   */
  protected override async _run<R>(): Promise<R> {
    try {
      return await super._run<R>();
    } finally {
      if (this.signalHandler) {
        process.off('SIGINT', this.signalHandler);
        process.off('SIGTERM', this.signalHandler);
      }
    }
  }
}

/** APEX_DEBUG asks for stack traces unless unset, empty or an explicit no (0, false, no, off). */
function debugRequested(value: string | undefined): boolean {
  return value !== undefined && value.trim() !== '' && !/^(0|false|no|off)$/i.test(value.trim());
}
