/**
 * Weight transforms (APEX mixing sites, LoRA's W + s·B·A) computed once per optimizer step
 * instead of once per micro-batch, for gradient accumulation.
 *
 * Within a step the trainable tensors do not change, so every micro-batch would rebuild the
 * same transformed weights W' = T(W, θ) and push its own gradient back through T. T's backward
 * is linear in the incoming gradient, so the sum over micro-batches of T's backward equals T's
 * backward of the summed dL/dW'. Prepared, a step runs T forward once (no tape), the
 * micro-batches take gradients with respect to W' itself, and one pass at the end runs T again
 * under the tape and back once with the accumulated dL/dW' (recomputing T's forward is cheaper
 * than keeping its tape across micro-batches, which tfjs cannot). With A micro-batches per
 * step, T costs 2 forwards + 1 backward instead of A of each; the trainer prepares only when
 * A > 1. The result equals the unprepared computation up to float rounding (the order of the
 * sums; test/train/prepared-transforms.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import type { LayerHooks, ProjectionKey } from '../model/layer-hooks.js';
import { layerWeightsOf, type ModelWeights } from '../model/model-weights.js';
import { tapeGradients } from '../model/tape-gradients.js';

/** The order decoder-layer.ts reads the projections in (each weight, then its bias): hooks may rely on it. */
const FORWARD_ORDER: readonly ProjectionKey[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

interface Transformed {
  readonly layer: number;
  readonly key: ProjectionKey;
  readonly part: 'weight' | 'bias';
  /** The model tensor it replaces. */
  readonly source: tf.Tensor;
  readonly value: tf.Tensor;
}

export interface PreparedTransforms {
  /** Hooks for the micro-batches: they hand out the prepared tensors. */
  readonly hooks: (layer: number) => LayerHooks | undefined;
  /** The prepared tensors, to take the micro-batches' gradients with respect to. */
  readonly tensors: readonly tf.Tensor[];
  /** Whether `t` is a weight or bias that a prepared tensor stands in for (the micro-batches do not read it). */
  replaces(t: tf.Tensor): boolean;
  /**
   * dL/d(variables) through the transforms, from the accumulated dL/d(tensors) (same order as
   * `tensors`; a missing entry counts as zero). Variables the transforms do not read are absent.
   */
  backward(upstream: readonly (tf.Tensor | undefined)[], variables: readonly tf.Variable[]): Map<tf.Variable, tf.Tensor>;
  dispose(): void;
}

/**
 * A scalar whose gradient with respect to `v` is `g`: ⟨v, g⟩ without computing it. The
 * product and the sum would cost three passes over every transformed weight (forward, and the
 * gradients of both); only the gradient is needed.
 */
function seeded(v: tf.Tensor, g: tf.Tensor): tf.Scalar {
  const op = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.scalar(0),
    // The upstream gradient of this term is 1 (it is only summed); the engine disposes the
    // gradients it is handed, so it gets a clone of g.
    gradFunc: () => tf.clone(g),
  })) as (x: tf.Tensor) => tf.Scalar;
  return op(v);
}

/** Runs every hook transform of every layer in the forward's order; `visit` receives each tensor that a hook replaced. */
function eachTransform(model: ModelWeights, hooks: (layer: number) => LayerHooks | undefined, visit: (t: Omit<Transformed, 'value'>, value: tf.Tensor) => void): void {
  for (let layer = 0; layer < model.spec.numLayers; layer++) {
    const h = hooks(layer);
    if (!h) continue;
    const w = layerWeightsOf(model, layer);
    for (const key of FORWARD_ORDER) {
      const W = w.proj[key];
      const Wt = h.transformWeight?.(key, W) ?? W;
      if (Wt !== W) visit({ layer, key, part: 'weight', source: W }, Wt);
      const b = w.bias[key];
      if (b && h.transformBias) {
        const bt = h.transformBias(key, b);
        if (bt !== b) visit({ layer, key, part: 'bias', source: b }, bt);
      }
    }
  }
}

/** Computes the transforms of the current weights (outside any gradient tape) and keeps them until `dispose`. */
export function prepareTransforms(model: ModelWeights, hooks: (layer: number) => LayerHooks | undefined): PreparedTransforms {
  const prepared: Transformed[] = [];
  tf.tidy(() => eachTransform(model, hooks, (t, value) => prepared.push({ ...t, value: tf.keep(value) })));
  const byLayer = new Map<number, Map<string, tf.Tensor>>();
  for (const t of prepared) {
    const m = byLayer.get(t.layer) ?? new Map<string, tf.Tensor>();
    m.set(`${t.part} ${t.key}`, t.value);
    byLayer.set(t.layer, m);
  }
  const layerHooks = new Map<number, LayerHooks>();
  for (const [layer, m] of byLayer) {
    layerHooks.set(layer, {
      transformWeight: (key, weight) => (m.get(`weight ${key}`) as tf.Tensor2D | undefined) ?? weight,
      transformBias: (key, bias) => (m.get(`bias ${key}`) as tf.Tensor1D | undefined) ?? bias,
    });
  }
  const sources = new Set(prepared.map((t) => t.source));
  return {
    hooks: (layer) => layerHooks.get(layer),
    tensors: prepared.map((t) => t.value),
    replaces: (t) => sources.has(t),
    backward: (upstream, variables) => {
      if (upstream.length !== prepared.length) throw new RangeError(`prepared transforms: ${upstream.length} gradients for ${prepared.length} tensors`);
      const out = new Map<tf.Variable, tf.Tensor>();
      if (upstream.every((g) => g === undefined) || variables.length === 0) return out;
      // Σ_i ⟨T_i(W, θ), g_i⟩ has the gradient Σ_i T_i's backward of g_i with respect to W and θ.
      const { value, grads } = tapeGradients(
        () => {
          let total: tf.Scalar | undefined;
          let i = 0;
          eachTransform(model, hooks, (_t, v) => {
            const g = upstream[i++];
            if (!g) return;
            const term = seeded(v, g);
            total = total ? (tf.add(total, term) as tf.Scalar) : term;
          });
          return total!;
        },
        [...variables],
        undefined,
        true,
      );
      value.dispose();
      variables.forEach((v, i) => {
        const g = grads[i];
        if (g) out.set(v, g);
      });
      return out;
    },
    dispose: () => tf.dispose(prepared.map((t) => t.value)),
  };
}
