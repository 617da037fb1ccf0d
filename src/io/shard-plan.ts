/**
 * Decides which tensor goes into which file before anything is written: either the input's
 * layout kept as it was (same file names, same tensor → file map) or a fresh plan that fills
 * `model-0000i-of-0000N.safetensors` shards up to a size limit, Hugging Face style. Pure.
 */
import { ApexError, ExitCode } from '../errors.js';
import { type DType, tensorByteLength } from './dtype.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { compareNames, type TensorDescriptor } from './safetensors-writer.js';

export { INDEX_FILE, SINGLE_FILE };

export interface ShardFilePlan {
  readonly file: string;
  /** Tensor names in this file (the writer orders them inside the file). */
  readonly tensors: readonly string[];
  /** Sum of the tensors' bytes. */
  readonly bytes: number;
}

export interface ShardPlan {
  readonly files: readonly ShardFilePlan[];
  /** Whether a `model.safetensors.index.json` is written. */
  readonly indexed: boolean;
  readonly weightMap: ReadonlyMap<string, string>;
  /** Sum of all tensor bytes (the index's `metadata.total_size`). */
  readonly totalBytes: number;
}

/** Compares names with digit runs as numbers, so `layers.2` comes before `layers.10`. */
export function naturalCompare(a: string, b: string): number {
  const re = /(\d+)|(\D+)/g;
  const pa = a.match(re) ?? [];
  const pb = b.match(re) ?? [];
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
      return x.length - y.length;
    }
    return compareNames(x, y);
  }
  return pa.length - pb.length;
}

export function shardFileName(i: number, n: number): string {
  return `model-${String(i).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

/**
 * Fills shards in natural name order, starting a new shard when the next tensor would push
 * the current one past `maxShardBytes`; a tensor larger than the limit gets a shard of its own.
 * Without a limit, or when everything fits, the result is one `model.safetensors`, no index.
 */
export function planShards(tensors: readonly TensorDescriptor[], maxShardBytes?: number): ShardPlan {
  const sized = [...tensors].sort((a, b) => naturalCompare(a.name, b.name)).map((t) => ({ name: t.name, bytes: bytesOf(t.name, t.dtype, t.shape) }));
  const groups: { tensors: string[]; bytes: number }[] = [];
  let current: { tensors: string[]; bytes: number } | undefined;
  for (const t of sized) {
    if (!current || (maxShardBytes !== undefined && current.tensors.length > 0 && current.bytes + t.bytes > maxShardBytes)) {
      current = { tensors: [], bytes: 0 };
      groups.push(current);
    }
    current.tensors.push(t.name);
    current.bytes += t.bytes;
  }
  if (groups.length <= 1) {
    const only = groups[0] ?? { tensors: [], bytes: 0 };
    return finish([{ file: SINGLE_FILE, tensors: only.tensors, bytes: only.bytes }], false);
  }
  return finish(groups.map((g, i) => ({ file: shardFileName(i + 1, groups.length), tensors: g.tensors, bytes: g.bytes })), true);
}

/**
 * Keeps an existing layout: every tensor goes to the file it was in. `fileOrder` is the
 * input's shard order; `indexed` whether the input had an index.
 */
export function keepLayout(tensors: readonly TensorDescriptor[], layout: ReadonlyMap<string, string>, fileOrder: readonly string[], indexed: boolean): ShardPlan {
  const byFile = new Map<string, { tensors: string[]; bytes: number }>(fileOrder.map((f) => [f, { tensors: [], bytes: 0 }]));
  for (const t of tensors) {
    const file = layout.get(t.name);
    const group = file === undefined ? undefined : byFile.get(file);
    if (!group) {
      throw new ApexError('LAYOUT_MISMATCH', ExitCode.internal, `tensor '${t.name}' has no file in the input layout; plan new shards instead of keeping the layout`);
    }
    group.tensors.push(t.name);
    group.bytes += bytesOf(t.name, t.dtype, t.shape);
  }
  const files = fileOrder.map((f) => ({ file: f, ...byFile.get(f)! })).filter((f) => f.tensors.length > 0);
  return finish(files, indexed);
}

function finish(files: ShardFilePlan[], indexed: boolean): ShardPlan {
  const weightMap = new Map<string, string>();
  let totalBytes = 0;
  for (const f of files) {
    for (const t of f.tensors) weightMap.set(t, f.file);
    totalBytes += f.bytes;
  }
  return { files, indexed, weightMap, totalBytes };
}

function bytesOf(name: string, dtype: DType, shape: readonly number[]): number {
  const n = tensorByteLength(dtype, shape);
  if (n === undefined) throw new ApexError('INVALID_TENSOR_FOR_WRITE', ExitCode.internal, `tensor '${name}': shape ${JSON.stringify(shape)} × ${dtype} overflows`);
  return n;
}

/** The text of `model.safetensors.index.json`: total_size and a weight_map sorted by key. */
export function indexJson(plan: ShardPlan): string {
  const keys = [...plan.weightMap.keys()].sort(compareNames);
  const weight_map = Object.fromEntries(keys.map((k) => [k, plan.weightMap.get(k)!]));
  return `${JSON.stringify({ metadata: { total_size: plan.totalBytes }, weight_map }, null, 2)}\n`;
}
