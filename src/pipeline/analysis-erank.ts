/**
 * `apex analyze --erank`: the effective rank (APEX-METHOD §6) of every projection matrix of
 * every layer, and with a base model the effective rank of the update ΔW = W − W_base. One
 * matrix at a time is read (float32), widened to float64 inside the SVD and dropped, so memory
 * stays at about one matrix in float64 plus its float32 copies (see erankMemoryBytes).
 */
import { UsageError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { findLayerTensor } from '../model/architecture.js';
import { readFiniteFloat32 } from '../model/finite-check.js';
import type { ProjectionKey } from '../model/layer-hooks.js';
import type { ModelSpec } from '../model/model-spec.js';
import { effectiveRank } from '../ops/effective-rank.js';

export const ERANK_MODULES: readonly ProjectionKey[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export type ModuleValues = Record<ProjectionKey, number>;

export interface ErankLayer {
  readonly layer: number;
  readonly erank: ModuleValues;
  /** erank(W − W_base), with a base model. */
  readonly delta?: ModuleValues;
}

export interface ErankTiming {
  readonly module: ProjectionKey;
  readonly rows: number;
  readonly cols: number;
  /** Mean seconds per matrix: read + float64 SVD (values only); with a base, per SVD (half of W and ΔW together). */
  readonly seconds: number;
  readonly matrices: number;
}

export interface ErankResult {
  readonly modules: readonly ProjectionKey[];
  readonly layers: ErankLayer[];
  /** The base model's folder, when ΔW was measured. */
  readonly base?: string;
  readonly timing: ErankTiming[];
  readonly seconds: number;
}

export interface ErankOptions {
  readonly base?: { checkpoint: Checkpoint; spec: ModelSpec };
  readonly signal?: AbortSignal;
  /** After every matrix: matrices done and total, and the one just measured. */
  readonly onMatrix?: (done: number, total: number, label: string) => void;
}

/** The base must have exactly the same projection shapes (it is the same architecture before training). */
export function checkBaseCompatible(spec: ModelSpec, base: ModelSpec, basePath: string): void {
  const keys = ['numLayers', 'hiddenSize', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize'] as const;
  const differ = keys.filter((k) => spec[k] !== base[k]);
  if (differ.length > 0) {
    throw new UsageError(`--base ${basePath} does not have the model's shape (${differ.map((k) => `${k} ${base[k]} vs ${spec[k]}`).join(', ')}); ΔW needs the same architecture`, 'BASE_MISMATCH');
  }
}

/** Peak extra bytes while measuring one matrix: float32 W (and W_base) plus the float64 working copy. */
export function erankMemoryBytes(spec: ModelSpec, withBase: boolean): number {
  const q = spec.numHeads * spec.headDim;
  const largest = Math.max(q * spec.hiddenSize, spec.intermediateSize * spec.hiddenSize);
  return largest * (4 * (withBase ? 2 : 1) + 8);
}

/** Relative work of an SVD (values only) of an m×n matrix: 4mn² − 4n³/3 with m ≥ n. */
function svdWork(rows: number, cols: number): number {
  const m = Math.max(rows, cols);
  const n = Math.min(rows, cols);
  return 4 * m * n * n - (4 * n ** 3) / 3;
}

export async function effectiveRanks(checkpoint: Checkpoint, spec: ModelSpec, options: ErankOptions = {}): Promise<ErankResult> {
  const started = performance.now();
  const total = spec.numLayers * ERANK_MODULES.length;
  const spent = new Map<ProjectionKey, { seconds: number; matrices: number; rows: number; cols: number }>();
  const layers: ErankLayer[] = [];
  let done = 0;
  for (let layer = 0; layer < spec.numLayers; layer++) {
    const erank = {} as ModuleValues;
    const delta = {} as ModuleValues;
    for (const key of ERANK_MODULES) {
      options.signal?.throwIfAborted();
      const t = findLayerTensor(spec, layer, key)!;
      const [rows, cols] = t.dims as [number, number];
      const t0 = performance.now();
      const W = await readFiniteFloat32(checkpoint, t.name);
      erank[key] = effectiveRank(W, rows, cols);
      if (options.base) {
        const B = await readFiniteFloat32(options.base.checkpoint, t.name);
        for (let i = 0; i < W.length; i++) W[i] = W[i]! - B[i]!;
        delta[key] = effectiveRank(W, rows, cols);
      }
      const s = spent.get(key) ?? { seconds: 0, matrices: 0, rows, cols };
      s.seconds += (performance.now() - t0) / 1000 / (options.base ? 2 : 1);
      s.matrices += 1;
      spent.set(key, s);
      done += 1;
      options.onMatrix?.(done, total, `layer ${layer} ${key}`);
    }
    layers.push({ layer, erank, ...(options.base ? { delta } : {}) });
  }
  return {
    modules: ERANK_MODULES,
    layers,
    ...(options.base ? { base: options.base.checkpoint.dir } : {}),
    timing: ERANK_MODULES.map((module) => {
      const s = spent.get(module)!;
      return { module, rows: s.rows, cols: s.cols, seconds: s.seconds / s.matrices, matrices: s.matrices };
    }),
    seconds: (performance.now() - started) / 1000,
  };
}

/** Share of the total SVD work done after each module of a layer (for an ETA that follows cost, not count). */
export function erankWorkFraction(spec: ModelSpec, done: number): number {
  const perLayer = ERANK_MODULES.map((key) => {
    const [r, c] = findLayerTensor(spec, 0, key)!.dims as [number, number];
    return svdWork(r, c);
  });
  const layerWork = perLayer.reduce((a, b) => a + b, 0);
  const full = Math.floor(done / ERANK_MODULES.length);
  const partial = perLayer.slice(0, done % ERANK_MODULES.length).reduce((a, b) => a + b, 0);
  return (full * layerWork + partial) / (layerWork * spec.numLayers);
}
