/**
 * LoRA baseline (issue 6): a low-rank update on all seven projections of every layer,
 * W' = W + (α / r)·B·A with A [r, in] and B [out, r]; α = 2r by default, no dropout.
 * Initialisation as PEFT does it: A Kaiming-uniform as `nn.init.kaiming_uniform_(a=√5)`,
 * which is uniform in [−1/√in, 1/√in); B = 0, so training starts at the base model exactly.
 * The forward applies it through the `transformWeight` hook; at the end of the stage the
 * update is merged into the weights (`mergedWeight`) and the model is an ordinary checkpoint.
 *
 * Rng consumption order: layers ascending, projections in PROJECTION_KEYS order, A's values
 * in storage (row-major) order.
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../errors.js';
import { findLayerTensor } from '../model/architecture.js';
import type { LayerHooks, ProjectionKey } from '../model/layer-hooks.js';
import type { ModelSpec } from '../model/model-spec.js';
import { Rng } from '../util/rng.js';

/** The seven projections LoRA adapts, in Rng consumption order. */
export const PROJECTION_KEYS: readonly ProjectionKey[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LoraOptions {
  readonly rank: number;
  /** Default 2·rank. */
  readonly alpha?: number;
  readonly seed: number;
}

export interface LoraParameter {
  /** `<projection>.lora_A.weight` / `<projection>.lora_B.weight` (PEFT naming without its prefix). */
  readonly name: string;
  readonly variable: tf.Variable;
}

interface Adapter {
  readonly a: tf.Variable;
  readonly b: tf.Variable;
  readonly nameA: string;
  readonly nameB: string;
}

function projectionWeight(spec: ModelSpec, layer: number, key: ProjectionKey): { name: string; out: number; inner: number } {
  const t = findLayerTensor(spec, layer, key);
  if (t === undefined) throw new Error(`the architecture table has no ${key} weight`);
  return { name: t.name, out: t.dims[0] as number, inner: t.dims[1] as number };
}

/** Name of a projection's adapter factor (PEFT naming without its `base_model.model.` prefix). */
export function loraTensorName(spec: ModelSpec, layer: number, key: ProjectionKey, factor: 'A' | 'B'): string {
  return projectionWeight(spec, layer, key).name.replace(/\.weight$/, `.lora_${factor}.weight`);
}

/** Trainable parameters of LoRA with rank r on all seven projections: r · Σ (in + out). */
export function loraParamCount(spec: ModelSpec, rank: number): number {
  let perLayer = 0;
  for (const key of PROJECTION_KEYS) {
    const { out, inner } = projectionWeight(spec, 0, key);
    perLayer += out + inner;
  }
  return rank * perLayer * spec.numLayers;
}

/** The largest useful rank: the smallest side of any projection. */
export function maxLoraRank(spec: ModelSpec): number {
  return Math.min(
    ...PROJECTION_KEYS.map((key) => {
      const { out, inner } = projectionWeight(spec, 0, key);
      return Math.min(out, inner);
    }),
  );
}

/**
 * The rank whose trainable count is closest to `target` (ties → the smaller rank), in
 * [1, maxLoraRank] — for `--match-params`, sizing LoRA like a given APEX run.
 */
export function loraRankForParamCount(spec: ModelSpec, target: number): number {
  if (!Number.isFinite(target) || target <= 0) throw new UsageError(`target parameter count must be > 0, got ${target}`);
  const perRank = loraParamCount(spec, 1);
  const limit = maxLoraRank(spec);
  const low = Math.min(limit, Math.max(1, Math.floor(target / perRank)));
  const high = Math.min(limit, low + 1);
  return Math.abs(high * perRank - target) < Math.abs(low * perRank - target) ? high : low;
}

export class LoraAdapters {
  readonly rank: number;
  readonly alpha: number;
  /** α / r. */
  readonly scale: number;
  private readonly adapters: Map<string, Adapter>;

  private constructor(rank: number, alpha: number, adapters: Map<string, Adapter>) {
    this.rank = rank;
    this.alpha = alpha;
    this.scale = alpha / rank;
    this.adapters = adapters;
  }

  /** Fresh adapters for every layer and projection (A Kaiming-uniform, B zero). */
  static create(spec: ModelSpec, options: LoraOptions): LoraAdapters {
    const { rank } = options;
    if (!Number.isInteger(rank) || rank < 1 || rank > maxLoraRank(spec)) {
      throw new UsageError(`--lora-rank must be an integer in [1, ${maxLoraRank(spec)}], got ${rank}`);
    }
    const alpha = options.alpha ?? 2 * rank;
    if (!Number.isFinite(alpha) || alpha <= 0) throw new UsageError(`LoRA alpha must be > 0, got ${alpha}`);
    const rng = new Rng(options.seed);
    const adapters = new Map<string, Adapter>();
    for (let layer = 0; layer < spec.numLayers; layer++) {
      for (const key of PROJECTION_KEYS) {
        const { out, inner } = projectionWeight(spec, layer, key);
        const bound = 1 / Math.sqrt(inner);
        const values = new Float32Array(rank * inner);
        for (let i = 0; i < values.length; i++) values[i] = (2 * rng.next() - 1) * bound;
        adapters.set(adapterKey(layer, key), {
          nameA: loraTensorName(spec, layer, key, 'A'),
          nameB: loraTensorName(spec, layer, key, 'B'),
          a: tf.tidy(() => tf.variable(tf.tensor2d(values, [rank, inner]))),
          b: tf.tidy(() => tf.variable(tf.zeros([out, rank]))),
        });
      }
    }
    return new LoraAdapters(rank, alpha, adapters);
  }

  /** Every adapter factor with its name, layers ascending, A before B. */
  parameters(): LoraParameter[] {
    const out: LoraParameter[] = [];
    for (const { a, b, nameA, nameB } of this.adapters.values()) {
      out.push({ name: nameA, variable: a });
      out.push({ name: nameB, variable: b });
    }
    return out;
  }

  /** Total adapter parameters. */
  paramCount(): number {
    let total = 0;
    for (const { a, b } of this.adapters.values()) total += a.size + b.size;
    return total;
  }

  /** The factors of one projection: A [r, in], B [out, r]. */
  factors(layer: number, key: ProjectionKey): { readonly a: tf.Variable; readonly b: tf.Variable } {
    const adapter = this.adapters.get(adapterKey(layer, key));
    if (adapter === undefined) throw new Error(`no LoRA adapter for layer ${layer} ${key}`);
    return { a: adapter.a, b: adapter.b };
  }

  /** W + scale·B·A for one projection (differentiable in A and B). */
  mergedWeight(layer: number, key: ProjectionKey, weight: tf.Tensor2D): tf.Tensor2D {
    const adapter = this.adapters.get(adapterKey(layer, key));
    if (adapter === undefined) throw new Error(`no LoRA adapter for layer ${layer} ${key}`);
    return tf.tidy(() => tf.add(weight, tf.mul(tf.matMul(adapter.b, adapter.a), this.scale)));
  }

  /** The forward hooks of one layer: every projection's weight gets its low-rank update. */
  hooksForLayer(layer: number): LayerHooks {
    return { transformWeight: (key, weight) => this.mergedWeight(layer, key, weight) };
  }

  dispose(): void {
    for (const { a, b } of this.adapters.values()) {
      a.dispose();
      b.dispose();
    }
    this.adapters.clear();
  }
}

function adapterKey(layer: number, key: ProjectionKey): string {
  return `${layer}/${key}`;
}
