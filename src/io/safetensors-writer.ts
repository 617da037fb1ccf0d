/**
 * Streaming safetensors writer. Lays a file out as the format requires and the safetensors
 * crate reads (tensors ordered by dtype alignment, largest first, then name — the crate itself
 * orders by dtype, then name, so files mixing dtypes of one alignment, e.g. BF16 and F16, differ
 * from its order but not in content; header JSON padded with spaces to a multiple of 8;
 * `__metadata__.format` always present, "pt" unless the caller says otherwise),
 * then streams each tensor's bytes to disk one tensor at a time, so no caller ever holds a
 * whole shard. `writeSafetensors` is atomic for one file (temp file in the same folder, fsync,
 * rename, fsync folder); `writeSafetensorsFile` writes in place and is what the checkpoint
 * writer uses inside its own temporary folder.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ApexError, ExitCode, InterruptedError } from '../errors.js';
import { type DType, dtypeAlignment, isDType, tensorByteLength } from './dtype.js';
import { LONE_SURROGATE } from './safetensors-reader.js';
import { ioError } from './io-error.js';
import { removeStaleFileTemporaries } from './stale-temps.js';

/**
 * A tensor's bytes: in memory, produced on demand (called once, when the writer reaches the
 * tensor), or streamed as chunks (for tensors too large to hold at once).
 */
export type TensorData = Uint8Array | (() => Promise<Uint8Array>) | (() => AsyncIterable<Uint8Array>);

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: readonly number[];
  data: TensorData;
}

export interface TensorDescriptor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface PlannedTensor extends TensorDescriptor {
  /** Offsets relative to the data section, as written in the header. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsLayout {
  /** The 8-byte little-endian length followed by the padded header JSON. */
  readonly headerBytes: Uint8Array;
  /** Tensors in file order. */
  readonly tensors: readonly PlannedTensor[];
  readonly dataBytes: number;
  readonly fileBytes: number;
}

export interface WrittenTensor extends PlannedTensor {
  /** sha256 of the tensor bytes (hex), when hashing was asked for. */
  readonly sha256?: string;
}

export interface WriteOptions {
  signal?: AbortSignal;
  /** Compute a sha256 of every tensor's bytes while writing. */
  hash?: boolean;
  /** Called with the number of bytes just written (progress). */
  onBytes?: (bytes: number) => void;
  /**
   * Called before every write to disk. Tests use it to inject I/O failures (a thrown error
   * with `code: 'ENOSPC'` behaves like a full disk).
   */
  beforeWrite?: (path: string, position: number, length: number) => void;
  /**
   * `false` for files whose readers verify their content (a cache's entries, checksummed): no
   * fsync of the file or of its folder, and (writeSafetensors) no look for temporaries that
   * killed writers of this file left, a scan of the folder. These made many small writes into one
   * large folder slow; after a crash such a file may be missing or damaged, never silently wrong.
   */
  durable?: boolean;
}

const lentBuffers = new WeakSet<ArrayBufferLike>();

/**
 * Lets the writer write large chunks that are views of `buffer` asynchronously, without
 * copying them first. The owner promises not to change a chunk's bytes until the writer has
 * asked for the chunk after it; two lent buffers used in turn keep that promise, and let
 * reading the next chunk overlap writing the last one.
 */
export function lendToWriter(buffer: Uint8Array): void {
  lentBuffers.add(buffer.buffer);
}

/** Size of each of the writer's two buffers (one written while the other fills). */
const WRITE_BUFFER_BYTES = 8 << 20;
/** Node refuses single reads/writes of 2 GiB and more. */
const MAX_IO_BYTES = 1 << 30;

/**
 * An F32 tensor to write: its values, or a function the writer calls when it reaches the tensor
 * (so that a file of many tensors is written holding one at a time).
 */
export function f32Tensor(name: string, shape: readonly number[], values: Float32Array | (() => Float32Array | Promise<Float32Array>)): TensorToWrite {
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return { name, dtype: 'F32', shape, data: values instanceof Float32Array ? bytes(values) : async () => bytes(await values()) };
}

export function i32Tensor(name: string, shape: readonly number[], values: Int32Array): TensorToWrite {
  return { name, dtype: 'I32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** Orders names by code point (= UTF-8 byte order, as Rust and Python sort strings). */
export function compareNames(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(i)!;
    if (ca !== cb) return ca - cb;
    if (ca > 0xffff) i++;
  }
  return a.length - b.length;
}

/** Computes offsets and the padded header for a set of tensors, without writing anything. */
export function planSafetensorsLayout(tensors: readonly TensorDescriptor[], metadata: Record<string, string> = {}): SafetensorsLayout {
  const seen = new Set<string>();
  const sized = tensors.map((t) => {
    if (t.name === '__metadata__') throw invalidTensor(t.name, "'__metadata__' is reserved and cannot name a tensor");
    if (LONE_SURROGATE.test(t.name)) throw invalidTensor(t.name, 'tensor name holds an unpaired UTF-16 surrogate, which is not Unicode text');
    if (seen.has(t.name)) throw invalidTensor(t.name, 'tensor name appears twice');
    seen.add(t.name);
    if (!isDType(t.dtype)) throw invalidTensor(t.name, `unknown dtype '${String(t.dtype)}'`);
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) throw invalidTensor(t.name, `shape ${JSON.stringify(t.shape)} has an entry that is not a non-negative integer`);
    }
    const bytes = tensorByteLength(t.dtype, t.shape);
    if (bytes === undefined) throw invalidTensor(t.name, `shape ${JSON.stringify(t.shape)} × ${t.dtype} overflows or is not a whole number of bytes`);
    return { t, bytes };
  });
  sized.sort((a, b) => dtypeAlignment(b.t.dtype) - dtypeAlignment(a.t.dtype) || compareNames(a.t.name, b.t.name));
  const meta: Record<string, string> = { format: 'pt', ...metadata };
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw invalidTensor('__metadata__', `metadata '${k}' is not a string`);
    if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw invalidTensor('__metadata__', `metadata '${k}' holds an unpaired UTF-16 surrogate, which is not Unicode text`);
  }
  const parts: string[] = [`"__metadata__":${JSON.stringify(Object.fromEntries(Object.keys(meta).sort(compareNames).map((k) => [k, meta[k]])))}`];
  const planned: PlannedTensor[] = [];
  let offset = 0;
  for (const { t, bytes } of sized) {
    const p: PlannedTensor = { name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + bytes };
    planned.push(p);
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":${JSON.stringify(p.shape)},"data_offsets":[${p.begin},${p.end}]}`);
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const headerBytes = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(headerBytes.buffer).setBigUint64(0, BigInt(padded), true);
  headerBytes.set(json, 8);
  return { headerBytes, tensors: planned, dataBytes: offset, fileBytes: headerBytes.length + offset };
}

/**
 * Writes one safetensors file atomically: a temp file next to `path`, fsync'd, renamed over
 * `path`, then the folder fsync'd. On any failure the temp file is removed.
 */
export async function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>, options: WriteOptions = {}): Promise<void> {
  const durable = options.durable !== false;
  if (durable) await removeStaleFileTemporaries(path); // what killed writers of this file left
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await writeSafetensorsFile(tmp, tensors, metadata, options);
    await rename(tmp, path).catch((e: unknown) => { throw ioError(path, 'rename', e); });
    if (durable) await fsyncDir(dirname(path));
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}

/**
 * Writes one safetensors file in place (creating or truncating it) and fsyncs it. Not atomic
 * on its own: callers write into a temporary location they rename afterwards.
 */
export async function writeSafetensorsFile(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>, options: WriteOptions = {}): Promise<WrittenTensor[]> {
  const layout = planSafetensorsLayout(tensors, metadata);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  let handle: FileHandle;
  try {
    handle = await open(path, 'w');
  } catch (e) {
    throw ioError(path, 'create', e);
  }
  const out = new BufferedFileWriter(handle, path, options, layout.fileBytes);
  try {
    await out.write(layout.headerBytes);
    const written: WrittenTensor[] = [];
    for (const p of layout.tensors) {
      throwIfAborted(options.signal);
      const hash = options.hash ? createHash('sha256') : undefined;
      const want = p.end - p.begin;
      let got = 0;
      for await (const chunk of tensorChunks(byName.get(p.name)!.data)) {
        got += chunk.byteLength;
        if (got > want) break;
        hash?.update(chunk);
        await out.write(chunk);
        throwIfAborted(options.signal);
      }
      if (got !== want) throw invalidTensor(p.name, `data is ${got > want ? 'more than' : got} bytes but shape ${JSON.stringify(p.shape)} × ${p.dtype} needs ${want}`);
      written.push(hash ? { ...p, sha256: hash.digest('hex') } : p);
    }
    await out.flush();
    if (options.durable !== false) await handle.sync().catch((e: unknown) => { throw ioError(path, 'fsync', e); });
    return written;
  } finally {
    await out.settle();
    await handle.close().catch(() => {});
  }
}

async function* tensorChunks(data: TensorData): AsyncIterable<Uint8Array> {
  if (data instanceof Uint8Array) {
    yield data;
    return;
  }
  const produced = data();
  if (produced && typeof (produced as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function') {
    yield* produced as AsyncIterable<Uint8Array>;
  } else {
    yield await (produced as Promise<Uint8Array>);
  }
}

/**
 * Sequential writer with two buffers: while one buffer's write is in flight (in libuv's
 * thread pool) the caller fills the other, so reading the next chunk overlaps writing the
 * last. Small tensors coalesce. Large chunks of lent buffers (lendToWriter) skip the copy.
 */
class BufferedFileWriter {
  private readonly buffers: [Buffer, Buffer];
  private current = 0;
  private fill = 0;
  private position = 0;
  private inflight: Promise<void> | undefined;

  /** `fileBytes`: the whole file, so a small file does not allocate two 8 MiB buffers (a cache writes thousands). */
  constructor(private readonly handle: FileHandle, private readonly path: string, private readonly options: WriteOptions, fileBytes = WRITE_BUFFER_BYTES) {
    const size = Math.max(1, Math.min(WRITE_BUFFER_BYTES, fileBytes));
    this.buffers = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (chunk.byteLength >= WRITE_BUFFER_BYTES / 2 && lentBuffers.has(chunk.buffer)) {
      if (this.fill > 0) await this.submit();
      await this.inflight; // at most one write in flight
      this.inflight = this.writeAt(chunk, this.position);
      this.inflight.catch(() => {});
      this.position += chunk.byteLength;
      return;
    }
    // A small lent chunk: the write of the lent chunk before it must end before returning.
    if (lentBuffers.has(chunk.buffer)) await this.inflight;
    let off = 0;
    while (off < chunk.byteLength) {
      const buf = this.buffers[this.current]!;
      const n = Math.min(buf.length - this.fill, chunk.byteLength - off);
      buf.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === buf.length) await this.submit();
    }
  }

  /** Writes what is buffered and waits for every write to finish. */
  async flush(): Promise<void> {
    if (this.fill > 0) await this.submit();
    const last = this.inflight;
    this.inflight = undefined;
    await last;
  }

  /** Waits for an in-flight write, ignoring its outcome (before closing after an error). */
  async settle(): Promise<void> {
    await this.inflight?.catch(() => {});
  }

  private async submit(): Promise<void> {
    await this.inflight; // the other buffer is free again (and its error, if any, surfaces here)
    const buf = this.buffers[this.current]!.subarray(0, this.fill);
    const position = this.position;
    this.position += this.fill;
    this.inflight = this.writeAt(buf, position);
    this.inflight.catch(() => {}); // observed at the next submit or flush
    this.current ^= 1;
    this.fill = 0;
  }

  private async writeAt(chunk: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < chunk.byteLength) {
      const length = Math.min(MAX_IO_BYTES, chunk.byteLength - done);
      try {
        this.options.beforeWrite?.(this.path, position + done, length);
        const { bytesWritten } = await this.handle.write(chunk, done, length, position + done);
        done += bytesWritten;
        this.options.onBytes?.(bytesWritten);
      } catch (e) {
        throw ioError(this.path, 'write', e);
      }
    }
  }
}

/** fsyncs a folder so a rename or a new file in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } catch (e) {
    // Some filesystems refuse fsync on folders; the data files themselves are already synced.
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL' && (e as NodeJS.ErrnoException).code !== 'EISDIR') throw ioError(dir, 'fsync', e);
  } finally {
    await h.close();
  }
}

/** The one mapping of write failures (src/io/io-error.ts), re-exported for this module's callers. */
export { ioError } from './io-error.js';

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new InterruptedError();
}

function invalidTensor(name: string, detail: string): ApexError {
  return new ApexError('INVALID_TENSOR_FOR_WRITE', ExitCode.internal, `cannot write tensor '${name}': ${detail}`);
}
