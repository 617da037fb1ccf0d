/**
 * Filesystem errors while writing an output, said as apex's typed errors naming the file:
 * - ENOSPC / EDQUOT: disk (or quota) full → exit 5, DISK_FULL;
 * - EFBIG: the file-size limit (`ulimit -f`, RLIMIT_FSIZE) is exceeded → exit 5, FILE_TOO_LARGE
 *   (Node ignores SIGXFSZ, so the write fails with EFBIG instead of killing the process);
 * - EACCES / EPERM / EROFS: the location is not writable → exit 2, OUTPUT_NOT_WRITABLE;
 * - EBUSY / EXDEV (from a rename): the output is a mount point, or the rename would cross
 *   filesystems → exit 2, OUTPUT_NOT_WRITABLE;
 * - ENOENT / ENOTDIR on create: the folder is missing or a part of the path is a file → exit 2,
 *   OUTPUT_NOT_WRITABLE.
 * - ENAMETOOLONG: a name in the path (or the whole path) is longer than the filesystem allows →
 *   exit 2, OUTPUT_NOT_WRITABLE.
 * Anything else is returned unchanged (toApexError decides).
 */
import { basename, dirname } from 'node:path';
import { ApexError, ResourceLimitError, UsageError } from '../errors.js';

export function ioError(path: string, op: string, e: unknown): unknown {
  if (e instanceof ApexError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ResourceLimitError(`${path}: disk full during ${op} (${code}); this file could not be written`, 'DISK_FULL', { cause: e });
  }
  if (code === 'EFBIG') return fileTooLargeError(path, op, e);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new UsageError(`${path}: cannot ${op}, output location is not writable (${code})`, 'OUTPUT_NOT_WRITABLE', { cause: e });
  }
  if (code === 'EBUSY' || code === 'EXDEV') {
    return new UsageError(`${path}: cannot ${op}, it is a mount point or on another filesystem than its parent folder (${code}); give a subfolder of it instead`, 'OUTPUT_NOT_WRITABLE', { cause: e });
  }
  if (code === 'ENAMETOOLONG') return nameTooLong(path, e);
  if (op === 'create' && (code === 'ENOENT' || code === 'ENOTDIR')) {
    // Named by its folder: the file itself may be a temporary name the user never chose.
    return new UsageError(`${dirname(path)}: cannot write there, ${code === 'ENOENT' ? 'the folder does not exist' : 'a part of the path is a file, not a folder'} (${code})`, 'OUTPUT_NOT_WRITABLE', { cause: e });
  }
  return e;
}

/** Names longer than this many bytes are refused by Linux's filesystems (NAME_MAX). */
const NAME_MAX = 255;

/** Why a path was too long: a part over NAME_MAX, else the whole path (PATH_MAX, 4096 on Linux). */
function whyTooLong(path: string): string {
  const longest = Math.max(...path.split(/[\\/]/).map((n) => Buffer.byteLength(n)));
  return longest > NAME_MAX
    ? `its longest part is ${longest} bytes, most filesystems allow ${NAME_MAX}`
    : `the whole path is ${Buffer.byteLength(path)} bytes, Linux allows 4096`;
}

/** ENAMETOOLONG: the filesystem's limits are 255 bytes per name and 4096 per path (Linux). */
export function nameTooLong(path: string, cause: unknown): UsageError {
  return new UsageError(
    `${path}: cannot write the output there, the name is too long for the filesystem (ENAMETOOLONG; ${whyTooLong(path)}); choose a shorter output path`,
    'OUTPUT_NOT_WRITABLE',
    { cause },
  );
}

/**
 * ENAMETOOLONG for the lock file beside an output (`<out>.lock`, first written as
 * `<out>.lock.<pid>-<hex>`, some 20 bytes longer than the output's own name): the output's name
 * may be within the filesystem's limit and its lock's not, so the message says so and names the
 * output, not a temporary name the user never chose.
 */
export function lockNameTooLong(outDir: string, lockFile: string, cause: unknown): UsageError {
  const name = Buffer.byteLength(basename(outDir));
  const lock = Buffer.byteLength(basename(lockFile));
  const why = lock > NAME_MAX
    ? `apex writes its lock file beside it, named as the output plus .lock.<pid>-<random>: ${lock} bytes for the output's ${name}, and most filesystems allow ${NAME_MAX} per name`
    : whyTooLong(lockFile).replace('the whole path', "the path of its lock file (the output's plus .lock.<pid>-<random>)");
  return new UsageError(`${outDir}: cannot write the output there, the name is too long for the filesystem (ENAMETOOLONG): ${why}; choose a shorter output path`, 'OUTPUT_NOT_WRITABLE', { cause });
}

/** EFBIG: a write past the process's file-size limit (RLIMIT_FSIZE, `ulimit -f`). */
export function fileTooLargeError(path: string, op: string, cause: unknown): ResourceLimitError {
  return new ResourceLimitError(
    `${path}: the file-size limit (ulimit -f) was exceeded during ${op} (EFBIG); raise it (ulimit -f unlimited) or write smaller files; this file could not be written`,
    'FILE_TOO_LARGE',
    { cause },
  );
}
