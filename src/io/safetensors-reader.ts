/**
 * Strict, streaming safetensors reader. Validates a file the way the safetensors Rust crate
 * (0.6) does, then reads each tensor by file offset: never the whole file, so files larger
 * than 2 GiB work. Every failure is a SafetensorsFormatError naming file, tensor and rule.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { InputError, InternalError, SafetensorsFormatError } from '../errors.js';
import { type DType, isDType, tensorByteLength, tensorSizeProblem } from './dtype.js';
import { scanJsonText } from './json-keys.js';
import { decodeToFloat32 } from './float-codec.js';

export const MAX_HEADER_BYTES = 100_000_000;
/** Largest single fs.read; Node refuses reads of 2 GiB and more. */
const READ_CHUNK = 1 << 30;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Byte offsets relative to the start of the data section, as in the header. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  readonly headerLength: number;
  /** Absolute file offset of the data section (8 + headerLength). */
  readonly dataOffset: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors in file order (ascending offsets). */
  readonly tensors: readonly TensorInfo[];
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/**
 * Parses and validates a header given its raw bytes and the file size. Pure: used by the
 * reader and by the fuzzer without touching the disk.
 */
export function parseHeader(file: string, headerBytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const headerLength = headerBytes.length;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsFormatError(file, 'header-utf8', 'header is not valid UTF-8');
  }
  let first = 0;
  while (first < headerBytes.length && WS.has(headerBytes[first]!)) first++;
  if (headerBytes[first] !== 0x7b) {
    const looksLfs = text.startsWith('version https://git-lfs');
    const looksHtml = /^\s*<(!doctype|html)/i.test(text);
    const hint = looksLfs ? ' (this is a Git LFS pointer, not the file: run `git lfs pull`)' : looksHtml ? ' (this is an HTML page, probably a failed download)' : '';
    throw new SafetensorsFormatError(file, 'header-start', `header does not start with '{'${hint}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsFormatError(file, 'header-json', `header is not valid JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new SafetensorsFormatError(file, 'header-json', 'header is not a JSON object');
  }
  const scan = scanJsonText(text, (path) => /\/(shape|data_offsets)\/\[\]$/.test(path));
  const dup = scan.duplicate;
  if (dup) {
    throw new SafetensorsFormatError(file, 'duplicate-key', `key '${dup.key}' appears more than once${dup.path ? ` in ${dup.path}` : ''}`, dup.path === '' ? dup.key : dup.topKey);
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (LONE_SURROGATE.test(name)) {
      throw new SafetensorsFormatError(file, 'header-json', `key ${JSON.stringify(name)} holds an unpaired UTF-16 surrogate (an escape such as \\ud800), which is not Unicode text`);
    }
    if (name === '__metadata__') {
      // null is "no metadata" to the safetensors crate (an Option), so it is accepted here too.
      if (entry === null) continue;
      if (typeof entry !== 'object' || Array.isArray(entry)) {
        throw new SafetensorsFormatError(file, 'metadata-type', '__metadata__ must be an object of string to string');
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new SafetensorsFormatError(file, 'metadata-type', `__metadata__['${k}'] is ${v === null ? 'null' : typeof v}, must be a string`);
        }
        if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
          throw new SafetensorsFormatError(file, 'header-json', `__metadata__ entry ${JSON.stringify(k)} holds an unpaired UTF-16 surrogate, which is not Unicode text`);
        }
        metadata[k] = v;
      }
      continue;
    }
    tensors.push(parseTensorEntry(file, name, entry));
  }
  if (scan.nonInteger) {
    const { token, path, topKey } = scan.nonInteger;
    throw new SafetensorsFormatError(file, 'number-format', `${token} at ${path} must be written as a plain non-negative integer (no sign, fraction or exponent)`, topKey);
  }
  const dataOffset = 8 + headerLength;
  const dataSize = fileSize - dataOffset;
  const ordered = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const t of ordered) {
    if (t.begin !== expected) {
      const rule = t.begin < expected ? 'overlap' : 'gap';
      throw new SafetensorsFormatError(file, `offsets-${rule}`, `data starts at byte ${t.begin} but the previous tensor ends at ${expected}`, t.name);
    }
    expected = t.end;
  }
  if (expected > dataSize) {
    const last = ordered[ordered.length - 1];
    throw new SafetensorsFormatError(file, 'truncated', `tensor data ends at byte ${expected} of the data section but the file holds only ${dataSize} bytes after the header (file truncated?)`, last?.name);
  }
  if (expected < dataSize) {
    throw new SafetensorsFormatError(file, 'trailing-bytes', `${dataSize - expected} bytes after the last tensor`);
  }
  return { headerLength, dataOffset, metadata, tensors: ordered };
}

/**
 * An unpaired UTF-16 surrogate: JSON.parse accepts the escape "\ud800" alone, but it is not
 * Unicode, and the safetensors crate (serde_json) rejects such a header.
 */
export const LONE_SURROGATE = /\p{Surrogate}/u;

function parseTensorEntry(file: string, name: string, entry: unknown): TensorInfo {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new SafetensorsFormatError(file, 'tensor-entry', 'entry must be an object with dtype, shape and data_offsets', name);
  }
  const e = entry as Record<string, unknown>;
  if (typeof e.dtype !== 'string') throw new SafetensorsFormatError(file, 'tensor-dtype', 'dtype missing or not a string', name);
  if (!isDType(e.dtype)) throw new SafetensorsFormatError(file, 'tensor-dtype', `unknown dtype '${e.dtype}'`, name);
  if (!Array.isArray(e.shape)) throw new SafetensorsFormatError(file, 'tensor-shape', 'shape missing or not an array', name);
  for (const d of e.shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsFormatError(file, 'tensor-shape', `shape ${JSON.stringify(e.shape)} has an entry that is not a non-negative integer`, name);
    }
  }
  const offs = e.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2) {
    throw new SafetensorsFormatError(file, 'tensor-offsets', 'data_offsets must be [begin, end]', name);
  }
  const [begin, end] = offs as unknown[];
  if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
    throw new SafetensorsFormatError(file, 'tensor-offsets', `data_offsets ${JSON.stringify(offs)} must be non-negative integers`, name);
  }
  if (end < begin) throw new SafetensorsFormatError(file, 'tensor-offsets', `data_offsets end ${end} < begin ${begin}`, name);
  const shape = e.shape as number[];
  const bytes = tensorByteLength(e.dtype, shape);
  if (bytes === undefined) {
    if (tensorSizeProblem(e.dtype, shape) === 'misaligned') {
      throw new SafetensorsFormatError(file, 'misaligned-slice', `shape ${JSON.stringify(shape)} × ${e.dtype} does not fill a whole number of bytes`, name);
    }
    throw new SafetensorsFormatError(file, 'shape-overflow', `shape ${JSON.stringify(shape)} × ${e.dtype} overflows the largest safe byte count`, name);
  }
  if (bytes !== end - begin) {
    throw new SafetensorsFormatError(file, 'tensor-size', `shape ${JSON.stringify(shape)} × ${e.dtype} needs ${bytes} bytes but data_offsets span ${end - begin}`, name);
  }
  return { name, dtype: e.dtype, shape, begin, end };
}

/**
 * Checks the 8-byte header length against the limit and the file size, given the file's
 * first bytes (at least 8 when the file has them); returns the header length.
 */
export function checkHeaderLength(file: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8) {
    checkNotSomethingElse(file, prefix);
    throw new SafetensorsFormatError(file, 'header-too-small', `file is ${fileSize} bytes, smaller than the 8-byte header length`);
  }
  const len = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (len > BigInt(MAX_HEADER_BYTES)) {
    checkNotSomethingElse(file, prefix);
    throw new SafetensorsFormatError(file, 'header-too-large', `header length ${len} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const headerLength = Number(len);
  if (8 + headerLength > fileSize) {
    checkNotSomethingElse(file, prefix);
    throw new SafetensorsFormatError(file, 'header-length', `header length ${headerLength} runs past the end of the ${fileSize}-byte file`);
  }
  return headerLength;
}

/** Validates a whole safetensors file held in memory (tests and the fuzzer), like `open`. */
export function parseSafetensorsBytes(file: string, bytes: Uint8Array): SafetensorsHeader {
  const headerLength = checkHeaderLength(file, bytes.subarray(0, 64), bytes.length);
  return parseHeader(file, bytes.subarray(8, 8 + headerLength), bytes.length);
}

/**
 * An open safetensors file. Close it when done. A header-only one (`headerOnly`: a dry run's
 * Hub weight file whose header was read over HTTP, the file not downloaded) answers every
 * question about names, dtypes, shapes and offsets, and refuses any read of tensor data with an
 * InternalError: a caller that needs data has no business with it, and must never see zeros.
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly header: SafetensorsHeader,
    readonly fileSize: number,
    private readonly handle: FileHandle | undefined,
    private readonly byName: ReadonlyMap<string, TensorInfo>,
  ) {}

  /** A file known by its (validated) header alone; `path` names it in messages (e.g. repo/file on the Hub). */
  static headerOnly(path: string, header: SafetensorsHeader, fileSize: number): SafetensorsFile {
    return new SafetensorsFile(path, header, fileSize, undefined, new Map(header.tensors.map((t) => [t.name, t])));
  }

  /** False for a header-only file: its tensor data is not here. */
  get hasData(): boolean {
    return this.handle !== undefined;
  }

  /** The file handle for a data read; an InternalError for a header-only file. */
  private data(what: string): FileHandle {
    if (this.handle === undefined) {
      throw new InternalError(`${this.path}: ${what} asked for tensor data, but only the file's header was read (a dry run does not download the weights); this is a bug in apex`, 'HEADER_ONLY_CHECKPOINT');
    }
    return this.handle;
  }

  static async open(path: string): Promise<SafetensorsFile> {
    if (endianness() !== 'LE') throw new InputError('apex needs a little-endian machine to read safetensors', 'UNSUPPORTED_PLATFORM');
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new InputError(`${path}: cannot open (${err.code ?? err.message})`, err.code === 'ENOENT' ? 'NOT_FOUND' : 'UNREADABLE');
    }
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new InputError(`${path}: not a regular file`, 'UNREADABLE');
      const fileSize = st.size;
      const prefix = new Uint8Array(Math.min(fileSize, 64));
      await readExactly(handle, prefix, 0, path);
      const headerLength = checkHeaderLength(path, prefix, fileSize);
      const headerBytes = new Uint8Array(headerLength);
      await readExactly(handle, headerBytes, 8, path);
      const header = parseHeader(path, headerBytes, fileSize);
      const byName = new Map(header.tensors.map((t) => [t.name, t]));
      return new SafetensorsFile(path, header, fileSize, handle, byName);
    } catch (e) {
      await handle.close().catch(() => {});
      throw e;
    }
  }

  /** The file's first 8 + headerLength bytes, as stored (length prefix and header JSON). */
  async rawHeader(): Promise<Uint8Array> {
    const handle = this.data('the raw header');
    const out = new Uint8Array(this.header.dataOffset);
    await readExactly(handle, out, 0, this.path);
    return out;
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.header.metadata;
  }

  get tensors(): readonly TensorInfo[] {
    return this.header.tensors;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new InputError(`${this.path}: no tensor named '${name}'`, 'TENSOR_NOT_FOUND');
    return t;
  }

  /** Raw bytes of a tensor (or a byte range inside it), in a fresh, 8-byte-aligned buffer. */
  async readBytes(name: string, range?: { start: number; end: number }): Promise<Uint8Array> {
    const handle = this.data(`tensor '${name}'`);
    const t = this.info(name);
    const start = t.begin + (range?.start ?? 0);
    const end = range ? t.begin + range.end : t.end;
    if (start < t.begin || end > t.end || end < start) {
      throw new InputError(`${this.path}: byte range ${range?.start}..${range?.end} outside tensor '${name}'`, 'RANGE');
    }
    const out = new Uint8Array(end - start);
    await readExactly(handle, out, this.header.dataOffset + start, this.path);
    return out;
  }

  /**
   * Streams a tensor's raw bytes in chunks of at most `chunkBytes`, so tensors larger than
   * memory allows can be copied or hashed. Each chunk is a fresh buffer, unless `into` is
   * given: then every chunk is a view of `into` (chunk size = its length), valid only until
   * the next one is requested, which saves allocating and zero-filling per chunk.
   */
  async *readChunks(name: string, chunkBytes = 16 << 20, into?: Uint8Array): AsyncIterable<Uint8Array> {
    const handle = this.data(`tensor '${name}'`);
    const t = this.info(name);
    const step = into ? into.length : chunkBytes;
    if (step <= 0) throw new InputError(`${this.path}: chunk size must be positive`, 'RANGE');
    for (let start = t.begin; start < t.end; start += step) {
      const n = Math.min(step, t.end - start);
      const out = into ? into.subarray(0, n) : new Uint8Array(n);
      await readExactly(handle, out, this.header.dataOffset + start, this.path);
      yield out;
    }
  }

  /** Fills `out` with the tensor's bytes starting `offset` bytes into the tensor. */
  async readInto(name: string, offset: number, out: Uint8Array): Promise<void> {
    const handle = this.data(`tensor '${name}'`);
    const t = this.info(name);
    if (offset < 0 || offset + out.length > t.end - t.begin) {
      throw new InputError(`${this.path}: byte range ${offset}..${offset + out.length} outside tensor '${name}'`, 'RANGE');
    }
    await readExactly(handle, out, this.header.dataOffset + t.begin + offset, this.path);
  }

  /** Decodes a float tensor (F32, F16, BF16, F64) to float32. */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return decodeToFloat32(await this.readBytes(name), t.dtype, `${this.path}:${name}`);
  }

  /**
   * Decodes rows [rowStart, rowEnd) of a tensor whose first dimension is rows; lets callers
   * walk large embedding / lm_head matrices in blocks.
   */
  async readRowsFloat32(name: string, rowStart: number, rowEnd: number): Promise<Float32Array> {
    const t = this.info(name);
    const rows = t.shape[0] ?? 1;
    if (rowStart < 0 || rowEnd > rows || rowEnd < rowStart) {
      throw new InputError(`${this.path}: rows ${rowStart}..${rowEnd} outside tensor '${name}' with ${rows} rows`, 'RANGE');
    }
    const rowBytes = rows === 0 ? 0 : (t.end - t.begin) / rows;
    const bytes = await this.readBytes(name, { start: rowStart * rowBytes, end: rowEnd * rowBytes });
    return decodeToFloat32(bytes, t.dtype, `${this.path}:${name}`);
  }

  async close(): Promise<void> {
    await this.handle?.close();
  }
}

/**
 * Recognises files that are commonly saved under a .safetensors name by mistake: a Git LFS
 * pointer (repository cloned without `git lfs`), an HTML page or a JSON error body (a failed
 * download). Called only once the first 8 bytes failed as a header length, so a real file
 * whose length bytes happen to spell `{"` is never mistaken for one.
 */
export function checkNotSomethingElse(file: string, prefix: Uint8Array): void {
  const text = new TextDecoder('latin1').decode(prefix);
  if (text.startsWith('version https://git-lfs')) {
    throw new SafetensorsFormatError(file, 'git-lfs-pointer', 'this is a Git LFS pointer file, not the weights: fetch them with `git lfs pull` or download the file again');
  }
  if (/^(\xef\xbb\xbf)?\s*<(!doctype|html|head|body|\?xml)/i.test(text)) {
    throw new SafetensorsFormatError(file, 'html-page', 'this is an HTML/XML page, not safetensors: probably a failed or redirected download');
  }
  if (/^\s*[{[]\s*"/.test(text)) {
    throw new SafetensorsFormatError(file, 'json-document', 'this is a JSON document, not safetensors (no 8-byte header length): probably an error body saved by a failed download');
  }
}

/** Reads exactly `out.length` bytes at `position`, in chunks below Node's 2 GiB read limit. */
export async function readExactly(handle: FileHandle, out: Uint8Array, position: number, what = 'file'): Promise<void> {
  let done = 0;
  while (done < out.length) {
    const want = Math.min(READ_CHUNK, out.length - done);
    const { bytesRead } = await handle.read(out, done, want, position + done);
    if (bytesRead === 0) throw new InputError(`${what}: unexpected end of file at byte ${position + done} (was it truncated while apex was reading it?)`, 'TRUNCATED');
    done += bytesRead;
  }
}
