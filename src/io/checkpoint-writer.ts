/**
 * Writes a complete checkpoint folder (safetensors shards, index, configs, tokenizer files)
 * all-or-nothing: plan the files, stream every tensor into a temporary sibling folder, verify
 * it, rename it into place. This is the one way apex commands produce checkpoints.
 *
 * How a rewriting command (e.g. `apex expand`) uses it:
 *
 *   const input = await Checkpoint.open(inDir);
 *   const tensors = input.tensors().map((t) =>
 *     grows(t.name) ? floatTensor(t.name, t.dtype, newShape(t), () => expandValues(t.name))
 *                   : copiedTensor(t));
 *   const written = await writeCheckpoint({
 *     outDir, input, tensors,
 *     layout: maxShardBytes ? { kind: 'plan', maxShardBytes } : { kind: 'keep' },
 *     files: { 'config.json': `${JSON.stringify(newConfig, null, 2)}\n` },
 *     verify: async (dir, written) => { ...load `dir`, compare logits... },
 *     signal, onProgress, onWarning,
 *   });
 *
 * - A tensor's source is `copy` (raw bytes of an input tensor, streamed in chunks, never
 *   decoded), `float32` (values produced on demand, encoded once to the stored dtype with
 *   round-to-nearest-even) or `bytes`. Sources are called one at a time, in file order, so
 *   at most one computed tensor is in memory.
 * - Layout `keep` reuses the input's file names and tensor → file map; `plan` makes fresh
 *   `model-0000i-of-0000N.safetensors` shards up to `maxShardBytes` (none: one file).
 * - With `hash` (default on) every tensor's sha256 is taken while writing (for a copy that is
 *   the hash of the input bytes) and checked again by re-reading the written folder, which is
 *   also re-opened with the strict reader (headers, index cross-checks, names, dtypes,
 *   shapes) before the caller's `verify` runs. Only then is the folder renamed into place.
 * - A shard that would come out byte-identical to an input shard (copy-through with the kept
 *   layout) is copied inside the kernel (fs.copyFile), like `cp`.
 * - Existing non-empty output is refused unless `force`; the output is locked while writing;
 *   free disk space is checked before the first byte is written; a full disk, a failed
 *   verification or Ctrl-C leave no output behind.
 */
import { createHash } from 'node:crypto';
import { copyFile, stat, statfs, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ApexError, ExitCode, ResourceLimitError, VerificationError } from '../errors.js';
import { checkOutputWritable, fsyncFile, writeAtomicFolder } from './atomic-output.js';
import { formatBytes } from './byte-size.js';
import { Checkpoint, INDEX_FILE } from './checkpoint.js';
import { type DType, numel, tensorByteLength } from './dtype.js';
import { encodeFromFloat32 } from './float-codec.js';
import { listModelFiles, copyModelFiles } from './model-files.js';
import { indexJson, keepLayout, planShards, type ShardPlan } from './shard-plan.js';
import type { SafetensorsFile } from './safetensors-reader.js';
import { lendToWriter, planSafetensorsLayout, type TensorData, type TensorToWrite, type WriteOptions, type WrittenTensor, writeSafetensorsFile } from './safetensors-writer.js';
import { ioError } from './io-error.js';
import { usableFreeBytes } from './free-space.js';

export type OutputTensorSource =
  /** Raw bytes of the input tensor `from`, unchanged. */
  | { kind: 'copy'; from: string }
  /** Values computed on demand, encoded to the output dtype. */
  | { kind: 'float32'; values: () => Promise<Float32Array> }
  /** Raw bytes already in the output dtype. */
  | { kind: 'bytes'; data: TensorData };

export interface OutputTensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly source: OutputTensorSource;
}

export type LayoutChoice = { kind: 'keep' } | { kind: 'plan'; maxShardBytes?: number };

export interface WriteCheckpointOptions {
  outDir: string;
  tensors: readonly OutputTensor[];
  /** Source of `copy` tensors, of the kept layout and of the copied model files. */
  input?: Checkpoint;
  /** Default: `keep` with an input, else `plan` without a size limit. */
  layout?: LayoutChoice;
  /** Non-weight files to write (override copied ones), e.g. a changed config.json. */
  files?: Readonly<Record<string, string | Uint8Array>>;
  /** Copy config, tokenizer and chat-template files from the input (default true). */
  copyModelFiles?: boolean;
  /** Added to every shard's `__metadata__` (format stays "pt" unless given). */
  metadata?: Record<string, string>;
  force?: boolean;
  /** sha256 every tensor and re-check the written folder against it (default true). */
  hash?: boolean;
  /** The caller's own check of the finished temporary folder; throwing discards it. */
  verify?: (tmpDir: string, written: WrittenCheckpoint) => Promise<void>;
  signal?: AbortSignal;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  onWarning?: (message: string) => void;
  /** Recorded in the lock file. */
  command?: string;
  /** Fault injection for tests (see WriteOptions.beforeWrite). */
  beforeWrite?: WriteOptions['beforeWrite'];
  /**
   * Let the kernel copy a shard that would come out byte-identical to an input shard
   * (default true; the benchmark turns it off to time the streaming path).
   */
  kernelCopy?: boolean;
}

export interface WrittenTensorRecord {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly file: string;
  readonly bytes: number;
  readonly source: OutputTensorSource['kind'];
  readonly sha256?: string;
}

export interface WrittenCheckpoint {
  /** Final folder (the temporary one while `verify` runs). */
  readonly dir: string;
  readonly shardFiles: readonly string[];
  readonly indexed: boolean;
  readonly totalBytes: number;
  readonly tensors: readonly WrittenTensorRecord[];
  /** Non-weight files written, copied or given. */
  readonly modelFiles: readonly string[];
}

export function copiedTensor(t: { name: string; dtype: DType; shape: readonly number[] }, as: string = t.name): OutputTensor {
  return { name: as, dtype: t.dtype, shape: t.shape, source: { kind: 'copy', from: t.name } };
}

export function floatTensor(name: string, dtype: DType, shape: readonly number[], values: () => Promise<Float32Array>): OutputTensor {
  return { name, dtype, shape, source: { kind: 'float32', values } };
}

/** Every input tensor copied unchanged (a copy-through). */
export function copyAllTensors(input: Checkpoint): OutputTensor[] {
  return input.tensors().map((t) => copiedTensor(t));
}

export async function writeCheckpoint(options: WriteCheckpointOptions): Promise<WrittenCheckpoint> {
  const { input, tensors } = options;
  checkSources(tensors, input);
  const plan = choosePlan(options);
  const hash = options.hash ?? true;
  const extra = options.files ?? {};
  const copyFrom = input && (options.copyModelFiles ?? true) ? input.dir : undefined;
  const modelFileNames = copyFrom ? (await listModelFiles(copyFrom)).filter((f) => !(f in extra)) : [];
  const outDir = resolve(options.outDir);
  await checkOutputWritable(outDir); // first: a read-only filesystem is "not writable", not "disk full"
  await checkFreeSpace(outDir, plan, tensors, options, copyFrom, modelFileNames);

  const byName = new Map(tensors.map((t) => [t.name, t]));
  return writeAtomicFolder(
    outDir,
    { force: options.force, command: options.command, onWarning: options.onWarning },
    async (tmp) => {
      let done = 0;
      const onBytes = (n: number) => {
        done += n;
        options.onProgress?.(Math.min(done, plan.totalBytes), plan.totalBytes);
      };
      const records: WrittenTensorRecord[] = [];
      const copyBuffers = new CopyBuffers();
      for (const f of plan.files) {
        const toWrite = f.tensors.map((name) => toTensorToWrite(byName.get(name)!, input, copyBuffers));
        const metadata = { ...(options.layout?.kind !== 'plan' && input?.shardFiles.includes(f.file) ? input.shardMetadata(f.file) : {}), ...options.metadata };
        const writeOptions: WriteOptions = { hash, signal: options.signal, onBytes, beforeWrite: options.beforeWrite };
        const same = options.kernelCopy === false ? undefined : await identicalInputShard(input, f.file, f.tensors.map((n) => byName.get(n)!), metadata);
        const written = same
          ? await copyIdenticalShard(same, join(tmp, f.file), writeOptions, copyBuffers.next())
          : await writeSafetensorsFile(join(tmp, f.file), toWrite, metadata, writeOptions);
        for (const w of written) {
          records.push({ name: w.name, dtype: w.dtype, shape: w.shape, file: f.file, bytes: w.end - w.begin, source: byName.get(w.name)!.source.kind, ...(w.sha256 ? { sha256: w.sha256 } : {}) });
        }
      }
      if (plan.indexed) await writeSynced(join(tmp, INDEX_FILE), indexJson(plan));
      const modelFiles = copyFrom ? await copyModelFiles(copyFrom, tmp, new Set(Object.keys(extra))) : [];
      for (const [name, content] of Object.entries(extra)) await writeSynced(join(tmp, name), content);
      return { dir: tmp, shardFiles: plan.files.map((f) => f.file), indexed: plan.indexed, totalBytes: plan.totalBytes, tensors: records, modelFiles: [...modelFiles, ...Object.keys(extra)] };
    },
    async (tmp, written) => {
      await verifyWrittenCheckpoint(tmp, written, options.signal);
      await options.verify?.(tmp, written);
    },
  ).then((w) => ({ ...w, dir: outDir }));
}

/**
 * The input shard that a planned output file would reproduce byte for byte (same tensors,
 * all copied unchanged, same header bytes), if any.
 */
async function identicalInputShard(input: Checkpoint | undefined, file: string, tensors: readonly OutputTensor[], metadata: Record<string, string>): Promise<SafetensorsFile | undefined> {
  if (!input || !input.shardFiles.includes(file)) return undefined;
  const shard = input.shard(file);
  if (shard.tensors.length !== tensors.length) return undefined;
  if (!tensors.every((t) => t.source.kind === 'copy' && t.source.from === t.name && shard.has(t.name))) return undefined;
  const planned = planSafetensorsLayout(tensors, metadata);
  if (planned.fileBytes !== shard.fileSize) return undefined;
  const header = await shard.rawHeader();
  return Buffer.from(header).equals(Buffer.from(planned.headerBytes)) ? shard : undefined;
}

/**
 * Copies a shard that comes out unchanged inside the kernel (fs.copyFile, as `cp` does) instead of
 * streaming it through JS buffers. With hashing, the hashes are of the input's bytes, so
 * the read-back check still compares output against input.
 */
async function copyIdenticalShard(from: SafetensorsFile, to: string, options: WriteOptions, buffer: Uint8Array): Promise<WrittenTensor[]> {
  try {
    options.beforeWrite?.(to, 0, from.fileSize);
    await copyFile(from.path, to);
  } catch (e) {
    throw ioError(to, 'copy', e);
  }
  await fsyncFile(to);
  options.onBytes?.(from.fileSize);
  const written: WrittenTensor[] = [];
  for (const t of from.tensors) {
    if (options.signal?.aborted) throw options.signal.reason;
    if (!options.hash) {
      written.push(t);
      continue;
    }
    const h = createHash('sha256');
    for await (const chunk of from.readChunks(t.name, undefined, buffer)) h.update(chunk);
    written.push({ ...t, sha256: h.digest('hex') });
  }
  return written;
}

function choosePlan(options: WriteCheckpointOptions): ShardPlan {
  const layout = options.layout ?? (options.input ? { kind: 'keep' } : { kind: 'plan' });
  if (layout.kind === 'keep') {
    const input = options.input;
    if (!input) throw internal('LAYOUT_MISMATCH', "layout 'keep' needs an input checkpoint");
    return keepLayout(options.tensors, input.layout(), input.shardFiles, input.index !== undefined);
  }
  return planShards(options.tensors, layout.maxShardBytes);
}

/** Catches wiring mistakes (wrong dtype, wrong length) before any file is created. */
function checkSources(tensors: readonly OutputTensor[], input: Checkpoint | undefined): void {
  planSafetensorsLayout(tensors); // names, dtypes, shapes
  for (const t of tensors) {
    if (t.source.kind === 'copy') {
      if (!input) throw internal('INVALID_TENSOR_FOR_WRITE', `tensor '${t.name}' is a copy but no input checkpoint was given`);
      const src = input.info(t.source.from);
      if (src.dtype !== t.dtype || src.end - src.begin !== tensorByteLength(t.dtype, t.shape)) {
        throw internal('INVALID_TENSOR_FOR_WRITE', `tensor '${t.name}' (${t.dtype} ${JSON.stringify(t.shape)}) cannot be a byte copy of '${src.name}' (${src.dtype} ${JSON.stringify(src.shape)})`);
      }
    } else if (t.source.kind === 'float32' && !['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) {
      throw internal('INVALID_TENSOR_FOR_WRITE', `tensor '${t.name}': float32 values cannot be stored as ${t.dtype}`);
    }
  }
}

/**
 * Copied tensors stream through two reused buffers lent to the writer: chunk k is written
 * from one while chunk k + 1 is read into the other, with no copy in between. A fresh 16 MiB
 * buffer per chunk (allocated, zero-filled, collected) made copy-through about 3× slower.
 */
const COPY_CHUNK_BYTES = 16 << 20;

class CopyBuffers {
  private readonly buffers = [Buffer.allocUnsafe(COPY_CHUNK_BYTES), Buffer.allocUnsafe(COPY_CHUNK_BYTES)];
  private turn = 0;
  constructor() {
    for (const b of this.buffers) lendToWriter(b);
  }
  next(): Buffer {
    this.turn ^= 1;
    return this.buffers[this.turn]!;
  }
}

async function* copyChunks(input: Checkpoint, name: string, buffers: CopyBuffers): AsyncIterable<Uint8Array> {
  const t = input.info(name);
  const size = t.end - t.begin;
  for (let offset = 0; offset < size; offset += COPY_CHUNK_BYTES) {
    const out = buffers.next().subarray(0, Math.min(COPY_CHUNK_BYTES, size - offset));
    await input.readInto(name, offset, out);
    yield out;
  }
}

function toTensorToWrite(t: OutputTensor, input: Checkpoint | undefined, copyBuffers: CopyBuffers): TensorToWrite {
  const { name, dtype, shape } = t;
  const source = t.source;
  switch (source.kind) {
    case 'copy': {
      const from = source.from;
      return { name, dtype, shape, data: () => copyChunks(input!, from, copyBuffers) };
    }
    case 'bytes':
      return { name, dtype, shape, data: source.data };
    case 'float32':
      return {
        name,
        dtype,
        shape,
        data: async () => {
          const values = await source.values();
          if (values.length !== numel(shape)) {
            throw internal('INVALID_TENSOR_FOR_WRITE', `tensor '${name}': ${values.length} values computed for shape ${JSON.stringify(shape)}`);
          }
          return encodeFromFloat32(values, dtype);
        },
      };
  }
}

async function checkFreeSpace(outDir: string, plan: ShardPlan, tensors: readonly OutputTensor[], options: WriteCheckpointOptions, copyFrom: string | undefined, modelFileNames: readonly string[]): Promise<void> {
  let needed = 0;
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const f of plan.files) needed += planSafetensorsLayout(f.tensors.map((n) => byName.get(n)!)).fileBytes;
  if (plan.indexed) needed += indexJson(plan).length;
  for (const f of modelFileNames) needed += (await stat(join(copyFrom!, f))).size;
  for (const c of Object.values(options.files ?? {})) needed += typeof c === 'string' ? Buffer.byteLength(c) : c.byteLength;
  let parent = dirname(outDir);
  let free: number | undefined;
  for (;;) {
    try {
      free = usableFreeBytes(await statfs(parent));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(parent) === parent) return;
      parent = dirname(parent); // output parent not created yet: ask its nearest existing ancestor
    }
  }
  if (free !== undefined && needed > free) {
    throw new ResourceLimitError(`not enough disk space for ${outDir}: the checkpoint needs ${formatBytes(needed)}, ${formatBytes(free)} free on that filesystem; nothing was written`, 'DISK_FULL');
  }
}

/**
 * Re-opens the written folder with the strict reader and checks it holds exactly the planned
 * tensors in the planned files; with hashes, re-reads every tensor and compares.
 */
export async function verifyWrittenCheckpoint(dir: string, written: WrittenCheckpoint, signal?: AbortSignal): Promise<void> {
  let ck: Checkpoint;
  try {
    ck = await Checkpoint.open(dir, { requireConfig: false });
  } catch (e) {
    throw new VerificationError(`written checkpoint does not read back: ${(e as Error).message}`);
  }
  try {
    const buffer = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
    const names = ck.tensorNames();
    if (names.length !== written.tensors.length) throw new VerificationError(`written checkpoint holds ${names.length} tensors, expected ${written.tensors.length}`);
    for (const w of written.tensors) {
      const t = ck.has(w.name) ? ck.info(w.name) : undefined;
      if (!t || t.file !== w.file || t.dtype !== w.dtype || JSON.stringify(t.shape) !== JSON.stringify(w.shape)) {
        throw new VerificationError(`written tensor '${w.name}' does not match the plan (${t ? `${t.file} ${t.dtype} ${JSON.stringify(t.shape)}` : 'missing'})`);
      }
      if (w.sha256 === undefined) continue;
      if (signal?.aborted) throw signal.reason;
      const h = createHash('sha256');
      for await (const chunk of ck.readChunks(w.name, undefined, buffer)) h.update(chunk);
      if (h.digest('hex') !== w.sha256) throw new VerificationError(`written tensor '${w.name}' differs from the bytes apex meant to write (sha256 mismatch)`);
    }
  } finally {
    await ck.close();
  }
}

async function writeSynced(path: string, content: string | Uint8Array): Promise<void> {
  try {
    await writeFile(path, content);
  } catch (e) {
    throw ioError(path, 'write', e);
  }
  await fsyncFile(path);
}

function internal(code: string, message: string): ApexError {
  return new ApexError(code, ExitCode.internal, message);
}
