/**
 * Typed errors with documented exit codes. Every failure apex reports to a user is one of
 * these; the CLI maps them to `{ok:false,error:{code,message,exit}}` and the process exit code.
 */

export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  input: 3,
  offlineMiss: 4,
  resource: 5,
  verification: 6,
  interrupted: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class ApexError extends Error {
  /** Stable machine-readable code, e.g. `SAFETENSORS_FORMAT`. */
  readonly code: string;
  readonly exit: ExitCodeValue;
  constructor(code: string, exit: ExitCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.exit = exit;
    this.name = new.target.name;
  }
}

/** Bad flags, bad config, contradictory options (exit 2). */
export class UsageError extends ApexError {
  constructor(message: string, code = 'USAGE', options?: { cause?: unknown }) {
    super(code, ExitCode.usage, message, options);
  }
}

/** Input not found, unreadable or unsupported (exit 3). */
export class InputError extends ApexError {
  constructor(message: string, code = 'INPUT', options?: { cause?: unknown }) {
    super(code, ExitCode.input, message, options);
  }
}

/** A file that is not a valid safetensors file; names the file, tensor (if any) and rule. */
export class SafetensorsFormatError extends InputError {
  readonly file: string;
  readonly tensor: string | undefined;
  readonly rule: string;
  constructor(file: string, rule: string, detail: string, tensor?: string) {
    super(
      `${file}: invalid safetensors (${rule})${tensor !== undefined ? ` in tensor '${tensor}'` : ''}: ${detail}`,
      'SAFETENSORS_FORMAT',
    );
    this.file = file;
    this.tensor = tensor;
    this.rule = rule;
  }
}

/** An architecture or config feature apex refuses rather than computing something wrong (exit 3). */
export class UnsupportedModelError extends InputError {
  constructor(message: string) {
    super(message, 'UNSUPPORTED_MODEL');
  }
}

/** HF_HUB_OFFLINE=1 (or no network) and the file is not in the cache (exit 4). */
export class OfflineCacheMissError extends ApexError {
  constructor(message: string) {
    super('OFFLINE_CACHE_MISS', ExitCode.offlineMiss, message);
  }
}

/** Memory or disk limit (exit 5). */
export class ResourceLimitError extends ApexError {
  constructor(message: string, code = 'RESOURCE_LIMIT', options?: { cause?: unknown }) {
    super(code, ExitCode.resource, message, options);
  }
}

/** Output failed verification, or NaN/Inf detected (exit 6). */
export class VerificationError extends ApexError {
  constructor(message: string, code = 'VERIFICATION_FAILED') {
    super(code, ExitCode.verification, message);
  }
}

/** SIGINT / SIGTERM (exit 130). */
export class InterruptedError extends ApexError {
  constructor(message = 'interrupted') {
    super('INTERRUPTED', ExitCode.interrupted, message);
  }
}

/**
 * A bug in apex itself (exit 1), e.g. code asking a header-only checkpoint (a dry run's Hub model
 * whose weights were not downloaded) for tensor data. Never a user's input problem.
 */
export class InternalError extends ApexError {
  constructor(message: string, code = 'INTERNAL') {
    super(code, ExitCode.internal, message);
  }
}

/** Maps any thrown value to an ApexError (unknown errors become internal, exit 1). */
export function toApexError(err: unknown): ApexError {
  if (err instanceof ApexError) return err;
  const e = err as NodeJS.ErrnoException & { oclif?: { exit?: number } };
  if (e && typeof e === 'object') {
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') {
      return new ResourceLimitError(`disk full: ${e.message}`, 'DISK_FULL', { cause: err });
    }
    if (e.code === 'EFBIG') {
      return new ResourceLimitError(`the file-size limit (ulimit -f) was exceeded: ${e.message}; raise it (ulimit -f unlimited)`, 'FILE_TOO_LARGE', { cause: err });
    }
    if (e.code === 'ENOMEM') return new ResourceLimitError(`out of memory: ${e.message}`, 'OUT_OF_MEMORY', { cause: err });
    if (e.code === 'EMFILE' || e.code === 'ENFILE') {
      return new ResourceLimitError(`too many open files: ${e.message} (raise the limit, e.g. ulimit -n)`, 'TOO_MANY_OPEN_FILES', { cause: err });
    }
    // A path the file system refuses (read-only, not permitted, too long, a link loop): the
    // user's to fix, like a missing or unreadable one.
    if (e.code === 'ENOENT' || e.code === 'EACCES' || e.code === 'EISDIR' || e.code === 'ENOTDIR' || e.code === 'EROFS' || e.code === 'EPERM' || e.code === 'ENAMETOOLONG' || e.code === 'ELOOP') {
      return new InputError(e.message, e.code, { cause: err });
    }
    // oclif parse errors (unknown flag, missing arg, bad option value) carry exit 2.
    const name = (e as Error).name ?? '';
    if (e.oclif?.exit === 2 || /Parse|Flag|Arg|Option/.test(name) || (e as Error).constructor?.name?.endsWith('Error') && /Nonexistent flag|Missing required|Expected --|Unexpected argument|Expected a /.test((e as Error).message ?? '')) {
      return new UsageError((e as Error).message, 'USAGE', { cause: err });
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ApexError('INTERNAL', ExitCode.internal, message, { cause: err });
}

