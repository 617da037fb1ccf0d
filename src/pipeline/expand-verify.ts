/**
 * Hashing and verification for `apex expand`. One sequential read per shard file gives its
 * sha256 (recorded in apex_run.json; computed in a worker thread, so that it runs on the
 * second core while the main thread reads and computes the per-tensor digests) and, for the
 * tensors asked for, per-tensor digests:
 * sha256 of the tensors copied byte for byte (the output's must equal the input's) and crc32
 * of the computed ones (the output's must equal that of the bytes apex encoded, whose
 * finiteness was checked before they were written). The finished temporary folder is
 * re-opened with the strict reader (headers, index cross-checks), and must hold exactly the
 * input's tensors with unchanged shapes and the planned dtypes.
 */
import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { VerificationError } from '../errors.js';
import { Checkpoint } from '../io/checkpoint.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';
import type { ExpandPlan } from './expand-plan.js';

/** Read buffers of the hashing pass, 4 × 4 MiB (counted in expand-plan.ts's ioBytes). */
const HASH_CHUNK_BYTES = 4 * 2 ** 20;
const HASH_BUFFERS = 4;

/**
 * The hashing passes' read buffers, shared by every pass of the process: an expand hashes the
 * input, the operator and update files and the output one after another, and fresh buffers per
 * pass stay resident until V8 collects them (external memory is freed lazily), which made the
 * peak grow with the number of passes and the file sizes. A pass takes them all and puts back
 * those the worker returned.
 */
const sharedHashBuffers: ArrayBuffer[] = [];

function takeHashBuffers(): ArrayBuffer[] {
  const taken = sharedHashBuffers.splice(0);
  while (taken.length < HASH_BUFFERS) taken.push(new ArrayBuffer(HASH_CHUNK_BYTES));
  return taken;
}

/**
 * The worker's source: it hashes the chunks posted to it, in order, and hands each buffer
 * back (transferred both ways, never copied).
 */
const FILE_HASH_WORKER = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
parentPort.on('message', (m) => {
  if (m === 'digest') return parentPort.postMessage({ digest: hash.digest('hex') });
  hash.update(new Uint8Array(m.buffer, 0, m.length));
  parentPort.postMessage({ buffer: m.buffer }, [m.buffer]);
});`;

/** sha256 of a byte stream in a worker thread, fed from a small pool of read buffers. */
class FileHashWorker {
  private readonly worker = new Worker(FILE_HASH_WORKER, { eval: true });
  private readonly free: ArrayBuffer[];
  private readonly waiting: ((b: ArrayBuffer) => void)[] = [];
  private onDigest: ((hex: string) => void) | undefined;
  private failure: Error | undefined;
  private readonly failed: Promise<never>;

  constructor(buffers: ArrayBuffer[]) {
    this.free = buffers;
    this.worker.on('message', (m: { buffer?: ArrayBuffer; digest?: string }) => {
      if (m.digest !== undefined) this.onDigest?.(m.digest);
      else if (this.waiting.length > 0) this.waiting.shift()!(m.buffer!);
      else this.free.push(m.buffer!);
    });
    this.failed = new Promise<never>((_, reject) => {
      const fail = (e: Error) => {
        this.failure ??= e;
        reject(this.failure);
      };
      this.worker.on('error', fail);
      this.worker.on('exit', (code) => fail(new Error(`the sha256 worker stopped (exit code ${code})`)));
    });
    this.failed.catch(() => {}); // observed through the calls below
  }

  /** A buffer the worker is done with (waits while all of them are in its queue). */
  async buffer(): Promise<ArrayBuffer> {
    if (this.failure) throw this.failure;
    const b = this.free.pop();
    if (b) return b;
    return Promise.race([new Promise<ArrayBuffer>((resolve) => this.waiting.push(resolve)), this.failed]);
  }

  /** Hands the first `length` bytes of `buffer` to the hash; the buffer comes back through buffer(). */
  update(buffer: ArrayBuffer, length: number): void {
    this.worker.postMessage({ buffer, length }, [buffer]);
  }

  async digest(): Promise<string> {
    const hex = new Promise<string>((resolve) => (this.onDigest = resolve));
    this.worker.postMessage('digest');
    return Promise.race([hex, this.failed]);
  }

  /** Stops the worker; returns the buffers it handed back (all of them after a digest). */
  async close(): Promise<ArrayBuffer[]> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
    return this.free.splice(0);
  }
}

export interface ShardDigest {
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly tensorSha256: ReadonlyMap<string, string>;
  readonly tensorCrc32: ReadonlyMap<string, number>;
}

export interface DigestRequest {
  /** Tensors whose sha256 is wanted. */
  readonly sha256?: ReadonlySet<string>;
  /** Tensors whose crc32 is wanted. */
  readonly crc32?: ReadonlySet<string>;
}

/** sha256 of a whole safetensors file plus the requested per-tensor digests, in one read. */
export async function digestShard(dir: string, file: string, want: DigestRequest, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<ShardDigest> {
  const path = join(dir, file);
  const st = await SafetensorsFile.open(path);
  const { dataOffset } = st.header;
  const tensors = st.tensors;
  const size = st.fileSize;
  await st.close();
  const fileHash = new FileHashWorker(takeHashBuffers());
  const shaOf = new Map<string, Hash>();
  const crcOf = new Map<string, number>();
  let fileSha256: string;
  const handle = await open(path, 'r');
  try {
    let next = 0; // first tensor that may still overlap the stream
    for (let pos = 0; pos < size;) {
      signal?.throwIfAborted();
      const buffer = await fileHash.buffer();
      const { bytesRead } = await handle.read(new Uint8Array(buffer), 0, Math.min(buffer.byteLength, size - pos), pos);
      if (bytesRead === 0) throw new VerificationError(`${path}: ended at byte ${pos} of ${size} while hashing (changed while apex was reading it?)`);
      const chunk = new Uint8Array(buffer, 0, bytesRead);
      const end = pos + bytesRead;
      for (let i = next; i < tensors.length; i++) {
        const t = tensors[i]!;
        const b = dataOffset + t.begin;
        const e = dataOffset + t.end;
        if (b >= end) break;
        if (e <= pos) {
          next = i + 1;
          continue;
        }
        const part = chunk.subarray(Math.max(b, pos) - pos, Math.min(e, end) - pos);
        if (want.sha256?.has(t.name)) {
          let h = shaOf.get(t.name);
          if (!h) shaOf.set(t.name, (h = createHash('sha256')));
          h.update(part);
        }
        if (want.crc32?.has(t.name)) crcOf.set(t.name, crc32(part, crcOf.get(t.name) ?? 0));
      }
      fileHash.update(buffer, bytesRead);
      onBytes?.(bytesRead);
      pos = end;
    }
    fileSha256 = await fileHash.digest();
  } finally {
    const [, returned] = await Promise.all([handle.close(), fileHash.close()]);
    sharedHashBuffers.push(...returned);
  }
  const tensorSha256 = new Map<string, string>();
  for (const t of tensors) {
    if (!want.sha256?.has(t.name)) continue;
    tensorSha256.set(t.name, (shaOf.get(t.name) ?? createHash('sha256')).digest('hex'));
  }
  const tensorCrc32 = new Map<string, number>();
  for (const t of tensors) if (want.crc32?.has(t.name)) tensorCrc32.set(t.name, crcOf.get(t.name) ?? 0);
  return { file, bytes: size, sha256: fileSha256, tensorSha256, tensorCrc32 };
}

export interface ExpandVerification {
  /** The finished temporary folder. */
  readonly dir: string;
  readonly input: Checkpoint;
  readonly plan: ExpandPlan;
  /** sha256 of every copied tensor of the input, by name. */
  readonly inputTensorSha256: ReadonlyMap<string, string>;
  /** crc32 of the bytes encoded for every computed tensor, by name. */
  readonly producedCrc32: ReadonlyMap<string, number>;
  readonly signal?: AbortSignal;
  readonly onBytes?: (n: number) => void;
}

/** Checks the written folder; returns the digests of its shards. Throws VerificationError. */
export async function verifyExpandedCheckpoint(v: ExpandVerification): Promise<ShardDigest[]> {
  let out: Checkpoint;
  try {
    out = await Checkpoint.open(v.dir);
  } catch (e) {
    throw new VerificationError(`the written checkpoint does not read back: ${(e as Error).message}`);
  }
  try {
    const planned = new Map(v.plan.tensors.map((t) => [t.name, t]));
    const names = out.tensorNames();
    for (const name of names) if (!planned.has(name)) throw new VerificationError(`the written checkpoint holds '${name}', which the input does not`);
    for (const t of v.plan.tensors) {
      if (!out.has(t.name)) throw new VerificationError(`the written checkpoint lacks '${t.name}'`);
      const w = out.info(t.name);
      const inShape = v.input.info(t.name).shape;
      if (JSON.stringify(w.shape) !== JSON.stringify(inShape)) {
        throw new VerificationError(`'${t.name}' was written with shape [${w.shape.join(', ')}] but the input's is [${inShape.join(', ')}]`);
      }
      if (w.dtype !== t.outDtype) throw new VerificationError(`'${t.name}' was written as ${w.dtype}, planned ${t.outDtype}`);
    }
    if (out.index) {
      const total = out.index.metadata.total_size;
      if (total !== undefined && total !== out.totalBytes()) {
        throw new VerificationError(`the written index says total_size ${String(total)} but the shards hold ${out.totalBytes()} bytes of tensors`);
      }
    }
    const copied = new Set(v.plan.tensors.filter((t) => t.reasons.length === 0).map((t) => t.name));
    const computed = new Set(v.plan.tensors.filter((t) => t.reasons.length > 0).map((t) => t.name));
    const digests: ShardDigest[] = [];
    for (const file of out.shardFiles) {
      const d = await digestShard(v.dir, file, { sha256: copied, crc32: computed }, v.signal, v.onBytes);
      for (const [name, sha] of d.tensorSha256) {
        if (sha !== v.inputTensorSha256.get(name)) throw new VerificationError(`copied tensor '${name}' differs from the input's (sha256 mismatch)`);
      }
      for (const [name, crc] of d.tensorCrc32) {
        if (crc !== v.producedCrc32.get(name)) throw new VerificationError(`computed tensor '${name}' on disk differs from the bytes apex encoded (crc32 mismatch)`);
      }
      digests.push(d);
    }
    return digests;
  } finally {
    await out.close();
  }
}
