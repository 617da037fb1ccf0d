/**
 * Reading a small file of a model folder (config.json, the tokenizer's JSON, a chat template)
 * whole, as its parser needs, but only when it is a regular file of a size such a file can
 * have: a 700 MB config.json was read and failed with "cannot read (undefined)", and a
 * config.json or tokenizer.json that is a device (a link to /dev/zero) was read without end, the
 * process growing until the machine ran out of memory. A pipe is read up to the limit.
 */
import { open, stat } from 'node:fs/promises';
import { readUpTo } from './pipe-stream.js';
import { InputError } from '../errors.js';

/** A model folder's JSON files and templates: kilobytes, a tokenizer.json tens of megabytes. */
export const MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024;
export const MAX_TOKENIZER_FILE_BYTES = 256 * 1024 * 1024;

/** A file (or a pipe's stream) larger than the limit for its kind: callers may word it their way. */
export class FileTooLargeError extends InputError {
  readonly path: string;
  readonly maxBytes: number;
  constructor(path: string, size: string, maxBytes: number, code: string) {
    super(`${path}: ${size}, more than the ${maxBytes}-byte limit for this file (is it the right file?)`, code);
    this.path = path;
    this.maxBytes = maxBytes;
  }
}

/**
 * The file's bytes; InputError with `code` when it is a device or socket, FileTooLargeError when
 * it is larger than `maxBytes`. File-system errors (ENOENT, EACCES, EISDIR…) are thrown as they come, for the
 * caller's message.
 */
export async function readBoundedFile(path: string, maxBytes: number, code: string): Promise<Buffer> {
  const tooLarge = (size: string) => new FileTooLargeError(path, size, maxBytes, code);
  // A pipe has no size to check first: read up to the limit, on the event loop where the
  // platform allows (pipe-stream.ts).
  if ((await stat(path)).isFIFO()) return readUpTo(path, maxBytes, () => tooLarge('more bytes'));
  const handle = await open(path, 'r');
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read`), { code: 'EISDIR' });
    if (!st.isFile()) throw new InputError(`${path}: not a regular file (a socket or device); apex reads this file whole, so it must be a file`, code);
    if (st.size > maxBytes) throw tooLarge(`${st.size} bytes`);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** readBoundedFile as UTF-8 text (a BOM kept, as readFile(path, 'utf8') keeps it). */
export async function readBoundedText(path: string, maxBytes: number, code: string): Promise<string> {
  return (await readBoundedFile(path, maxBytes, code)).toString('utf8');
}

/**
 * Refuses (NOT_A_FILE, exit 3) a path that is a device or socket: a model file linked to
 * /dev/zero would be hashed or copied without end. `why` ends the message: what apex does with it.
 */
export async function refuseDevice(path: string, why: string): Promise<void> {
  const st = await stat(path);
  if (st.isCharacterDevice() || st.isBlockDevice() || st.isSocket()) {
    throw new InputError(`${path}: not a regular file (a device or socket); ${why}, so they must be files`, 'NOT_A_FILE');
  }
}
