/**
 * A Hugging Face checkpoint folder: `config.json` plus either `model.safetensors` or
 * `model-0000i-of-0000N.safetensors` shards with `model.safetensors.index.json`. Opening one
 * cross-checks the index against every shard header; tensors are then read one at a time.
 * As transformers loads them: `model.safetensors` when the folder has it (an index beside it is
 * ignored), else exactly the files the index lists (other `.safetensors` files in the folder are
 * left unread and reported).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { scanJsonText } from './json-keys.js';
import { MAX_SMALL_FILE_BYTES, readBoundedFile, readBoundedText } from './bounded-read.js';
import type { RemoteWeightFile, RemoteWeights } from './hub-headers.js';
import { MAX_HEADER_BYTES, SafetensorsFile, type TensorInfo } from './safetensors-reader.js';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export interface CheckpointTensor extends TensorInfo {
  /** Shard file name (relative to the checkpoint folder). */
  readonly file: string;
}

export interface ShardIndex {
  readonly metadata: Record<string, unknown>;
  readonly weightMap: ReadonlyMap<string, string>;
}

export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly config: Record<string, unknown>,
    /** Shard file names in order. */
    readonly shardFiles: readonly string[],
    private readonly shards: ReadonlyMap<string, SafetensorsFile>,
    private readonly tensorsByName: ReadonlyMap<string, CheckpointTensor>,
    readonly index: ShardIndex | undefined,
    /**
     * `.safetensors` files in the folder that are not part of the checkpoint, left unread as
     * transformers does: those the index does not list (e.g. Mistral's `consolidated.safetensors`
     * next to its shards), or, next to `model.safetensors`, every other one.
     */
    readonly unlistedFiles: readonly string[] = [],
    /** Weight files not in `dir`, known by the headers read from the Hub (a dry run's); empty otherwise. */
    readonly remoteFiles: ReadonlyMap<string, RemoteWeightFile> = new Map(),
    /** The folder also has `model.safetensors.index.json`, ignored for its `model.safetensors`. */
    readonly ignoredIndex = false,
  ) {}

  /**
   * `indexProblems`: where an index and its shards disagree (a shard missing, a tensor in two
   * shards or mapped elsewhere), record the problem there and go on with what can be read
   * (`apex inspect` reports them) instead of throwing INDEX_MISMATCH.
   */
  static async open(dir: string, options: { requireConfig?: boolean; indexProblems?: string[]; remoteWeights?: RemoteWeights } = {}): Promise<Checkpoint> {
    const mismatch = (message: string): void => {
      if (options.indexProblems === undefined) throw new InputError(message, 'INDEX_MISMATCH');
      options.indexProblems.push(message);
    };
    const config = await readConfig(dir, options.requireConfig ?? true);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (e) {
      throw new InputError(`${dir}: cannot read checkpoint folder (${(e as NodeJS.ErrnoException).code})`, 'NOT_FOUND');
    }
    // A file resolve-model left on the Hub is read from its header even when the folder has an
    // entry of that name: such an entry is a link to a missing or wrong-sized blob, which the run
    // would download again (resolve-model.ts place), not a file to read.
    const remote = new Map((options.remoteWeights?.files ?? []).map((f) => [f.file, f]));
    entries = [...new Set([...entries, ...remote.keys()])];
    const opened = new Map<string, SafetensorsFile>();
    const closeAll = async () => { for (const f of opened.values()) await f.close().catch(() => {}); };
    try {
      let index: ShardIndex | undefined;
      let shardFiles: string[];
      let unlisted: string[] = [];
      let ignoredIndex = false;
      // model.safetensors first, as transformers' from_pretrained looks for it first: a folder
      // with both (a repo that ships one file and shards, not always of the same weights) is
      // the single file, and the index and every other .safetensors file are left unread.
      if (entries.includes(SINGLE_FILE)) {
        shardFiles = [SINGLE_FILE];
        unlisted = entries.filter((f) => f.endsWith('.safetensors') && f !== SINGLE_FILE).sort();
        ignoredIndex = entries.includes(INDEX_FILE);
      } else if (entries.includes(INDEX_FILE)) {
        index = await readIndex(join(dir, INDEX_FILE));
        shardFiles = [...new Set(index.weightMap.values())].sort();
        unlisted = entries.filter((f) => f.endsWith('.safetensors') && !shardFiles.includes(f)).sort();
        for (const f of shardFiles) if (!entries.includes(f)) mismatch(`${join(dir, INDEX_FILE)}: lists shard '${f}' which does not exist`);
        shardFiles = shardFiles.filter((f) => entries.includes(f));
      } else {
        const any = entries.filter((f) => f.endsWith('.safetensors'));
        if (any.length === 0) {
          const other = entries.filter((f) => /\.(bin|pth|pt|gguf)$/.test(f));
          throw new InputError(`${dir}: no safetensors weights found${other.length ? ` (found ${other.join(', ')}: apex reads only .safetensors)` : ''}`, 'NO_WEIGHTS');
        }
        throw new InputError(`${dir}: found ${any.join(', ')} but neither ${SINGLE_FILE} nor ${INDEX_FILE}`, 'NO_WEIGHTS');
      }
      const tensors = new Map<string, CheckpointTensor>();
      for (const f of shardFiles) {
        const r = remote.get(f);
        const st = r ? SafetensorsFile.headerOnly(r.name, r.header, r.bytes) : await SafetensorsFile.open(join(dir, f));
        opened.set(f, st);
        for (const t of st.tensors) {
          const prev = tensors.get(t.name);
          if (prev) {
            mismatch(`${dir}: tensor '${t.name}' appears in both ${prev.file} and ${f}`);
            continue; // the first copy stands
          }
          if (index) {
            const mapped = index.weightMap.get(t.name);
            if (mapped === undefined) mismatch(`${join(dir, INDEX_FILE)}: tensor '${t.name}' in ${f} is not in the weight_map`);
            else if (mapped !== f) mismatch(`${join(dir, INDEX_FILE)}: maps '${t.name}' to ${mapped} but it is stored in ${f}`);
          }
          tensors.set(t.name, { ...t, file: f });
        }
      }
      if (index) {
        for (const [name, f] of index.weightMap) {
          if (!tensors.has(name) && shardFiles.includes(f)) mismatch(`${join(dir, INDEX_FILE)}: maps '${name}' to ${f} but that shard has no such tensor`);
        }
      }
      return new Checkpoint(dir, config, shardFiles, opened, tensors, index, unlisted, new Map([...remote].filter(([f]) => shardFiles.includes(f))), ignoredIndex);
    } catch (e) {
      await closeAll();
      throw e;
    }
  }

  /** False when some weight file is known by its header alone (a dry run's Hub model): no tensor data can be read. */
  get hasData(): boolean {
    return this.remoteFiles.size === 0;
  }

  tensorNames(): string[] {
    return [...this.tensorsByName.keys()];
  }

  has(name: string): boolean {
    return this.tensorsByName.has(name);
  }

  info(name: string): CheckpointTensor {
    const t = this.tensorsByName.get(name);
    if (!t) throw new InputError(`${this.dir}: checkpoint has no tensor '${name}'`, 'TENSOR_NOT_FOUND');
    return t;
  }

  tensors(): CheckpointTensor[] {
    return [...this.tensorsByName.values()];
  }

  shard(file: string): SafetensorsFile {
    const s = this.shards.get(file);
    if (!s) throw new InputError(`${this.dir}: no shard ${file}`, 'NOT_FOUND');
    return s;
  }

  async readFloat32(name: string): Promise<Float32Array> {
    return this.shard(this.info(name).file).readFloat32(name);
  }

  async readBytes(name: string): Promise<Uint8Array> {
    return this.shard(this.info(name).file).readBytes(name);
  }

  async readRowsFloat32(name: string, rowStart: number, rowEnd: number): Promise<Float32Array> {
    return this.shard(this.info(name).file).readRowsFloat32(name, rowStart, rowEnd);
  }

  /** A tensor's raw bytes in chunks (see SafetensorsFile.readChunks for `into`). */
  readChunks(name: string, chunkBytes?: number, into?: Uint8Array): AsyncIterable<Uint8Array> {
    return this.shard(this.info(name).file).readChunks(name, chunkBytes, into);
  }

  /** Fills `out` with tensor bytes from `offset` on (see SafetensorsFile.readInto). */
  async readInto(name: string, offset: number, out: Uint8Array): Promise<void> {
    return this.shard(this.info(name).file).readInto(name, offset, out);
  }

  /** `__metadata__` of the shard holding `name` (for rewrites that keep it). */
  shardMetadata(file: string): Readonly<Record<string, string>> {
    return this.shard(file).metadata;
  }

  /** Tensor name → shard file name: the layout a rewrite keeps unless asked for a new plan. */
  layout(): Map<string, string> {
    return new Map([...this.tensorsByName.values()].map((t) => [t.name, t.file]));
  }

  /** Sum of all tensors' bytes (an index's `metadata.total_size`). */
  totalBytes(): number {
    let n = 0;
    for (const t of this.tensorsByName.values()) n += t.end - t.begin;
    return n;
  }

  async close(): Promise<void> {
    for (const s of this.shards.values()) await s.close().catch(() => {});
  }
}

async function readConfig(dir: string, required: boolean): Promise<Record<string, unknown>> {
  const path = join(dir, 'config.json');
  let text: string;
  try {
    text = await readBoundedText(path, MAX_SMALL_FILE_BYTES, 'BAD_CONFIG');
  } catch (e) {
    if (e instanceof InputError) throw e;
    if (!required) return {};
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(`${path}: cannot read (${code ?? (e as Error).message})${code === 'ENOENT' ? ': not a Hugging Face model folder' : ''}`, 'NOT_FOUND');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`, 'BAD_CONFIG');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InputError(`${path}: must be a JSON object`, 'BAD_CONFIG');
  return parsed as Record<string, unknown>;
}

/**
 * Reads and checks `model.safetensors.index.json`: bounded size, UTF-8 JSON object, no
 * duplicate keys, a non-empty `weight_map` of tensor name → shard file name in this folder.
 */
export async function readIndex(path: string): Promise<ShardIndex> {
  const bad = (detail: string) => new InputError(`${path}: invalid shard index: ${detail}`, 'BAD_INDEX');
  let bytes: Uint8Array;
  try {
    const st = await stat(path);
    if (st.size > MAX_HEADER_BYTES) throw bad(`${st.size} bytes, larger than the ${MAX_HEADER_BYTES}-byte limit`);
    bytes = await readBoundedFile(path, MAX_HEADER_BYTES, 'BAD_INDEX');
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw bad(`cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw bad('not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw bad(`not valid JSON (${(e as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw bad('must be a JSON object');
  const dup = scanJsonText(text, () => false).duplicate;
  if (dup) throw bad(`key '${dup.key}' appears more than once${dup.path ? ` in ${dup.path}` : ''}`);
  const p = parsed as Record<string, unknown>;
  const wm = p.weight_map;
  if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw bad("'weight_map' missing or not an object");
  const weightMap = new Map<string, string>();
  for (const [k, v] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof v !== 'string' || v.includes('/') || v.includes('\\') || v.startsWith('.') || !v.endsWith('.safetensors')) {
      throw bad(`weight_map['${k}'] = ${JSON.stringify(v)} is not a shard file name in this folder`);
    }
    weightMap.set(k, v);
  }
  if (weightMap.size === 0) throw bad("'weight_map' lists no tensors");
  if (p.metadata !== undefined && (p.metadata === null || typeof p.metadata !== 'object' || Array.isArray(p.metadata))) {
    throw bad("'metadata' must be an object");
  }
  const metadata = (p.metadata ?? {}) as Record<string, unknown>;
  return { metadata, weightMap };
}
