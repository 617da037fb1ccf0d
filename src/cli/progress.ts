/**
 * Progress reporting on stderr: an ora spinner on a real terminal, plain lines elsewhere
 * (CI, pipes, `--json`). ora loops forever on a TTY that reports 0 columns, hence the check.
 */
import ora, { type Ora } from 'ora';
import { redact } from '../util/secrets.js';

export interface Progress {
  /** Replaces the current status line (spinner) or prints a plain line when throttling allows. */
  update(text: string): void;
  /** Prints a permanent line. */
  info(text: string): void;
  succeed(text: string): void;
  fail(text: string): void;
  stop(): void;
}

export interface ProgressOptions {
  quiet?: boolean;
  /** Minimum milliseconds between plain-line updates (CI logs stay readable). */
  plainIntervalMs?: number;
  stream?: NodeJS.WriteStream;
}

export function spinnerUsable(stream: NodeJS.WriteStream = process.stderr): boolean {
  return Boolean(stream.isTTY) && (stream.columns ?? 0) > 0 && !process.env.CI;
}

export function createProgress(options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  if (options.quiet) {
    const noop = () => {};
    return { update: noop, info: noop, succeed: noop, fail: noop, stop: noop };
  }
  if (spinnerUsable(stream)) {
    let spinner: Ora | undefined;
    const ensure = (): Ora => (spinner ??= ora({ stream, discardStdin: false }).start());
    return {
      update: (t) => { ensure().text = redact(t); },
      info: (t) => {
        if (spinner) { spinner.stopAndPersist({ text: redact(t), symbol: ' ' }); spinner = undefined; }
        else stream.write(`${redact(t)}\n`);
      },
      succeed: (t) => { ensure().succeed(redact(t)); spinner = undefined; },
      fail: (t) => { ensure().fail(redact(t)); spinner = undefined; },
      stop: () => { spinner?.stop(); spinner = undefined; },
    };
  }
  const interval = options.plainIntervalMs ?? 5000;
  let last = 0;
  const line = (t: string) => stream.write(`${redact(t)}\n`);
  return {
    update: (t) => {
      const now = Date.now();
      if (now - last >= interval) { last = now; line(t); }
    },
    info: line,
    succeed: line,
    fail: line,
    stop: () => {},
  };
}
