/**
 * One LLaMA-family decoder layer as a pure tfjs function, shared by streaming inference,
 * generation (with a key/value cache) and training (inside a gradient tape): pre-norm causal
 * self-attention with GQA and rotary embeddings, then a SwiGLU MLP. The LayerHooks are applied
 * exactly where layer-hooks.ts says, and the observer sees the attention output before o_proj
 * and silu(gate). No data is downloaded inside, so it is differentiable.
 */
import * as tf from '@tensorflow/tfjs';
import { UnsupportedModelError } from '../errors.js';
import type { LayerActivations, LayerHooks, ProjectionKey } from './layer-hooks.js';
import { gatedUp, linear, rmsNorm } from './layer-math.js';
import type { ModelSpec } from './model-spec.js';
import { rotaryHeads, type RopeTensors } from './rope.js';

/** A layer's parameters as float32 tensors in checkpoint layout (projection weights [out, in]). */
export interface LayerWeights {
  readonly inputNorm: tf.Tensor1D;
  readonly postAttentionNorm: tf.Tensor1D;
  readonly proj: Readonly<Record<ProjectionKey, tf.Tensor2D>>;
  /** Biases the architecture has (q/k/v for Qwen2, all four attention ones with attention_bias, …). */
  readonly bias: Readonly<Partial<Record<ProjectionKey, tf.Tensor1D>>>;
}

/** Rotary-embedded keys and values of earlier positions, [B, nKv, S, dh] each. */
export interface KeyValue {
  readonly key: tf.Tensor4D;
  readonly value: tf.Tensor4D;
}

export interface DecoderLayerOptions {
  readonly layer: number;
  /** cos/sin for the positions of x (past length … past length + T − 1). */
  readonly rope: RopeTensors;
  readonly hooks?: LayerHooks;
  readonly observe?: (activations: LayerActivations) => void;
  /** Cached keys/values of the positions before x (generation). */
  readonly past?: KeyValue;
}

/** Masked scores: large and finite, so a fully computed softmax never sees inf − inf. */
const MASKED = -1e9;

export function decoderLayer(x: tf.Tensor3D, w: LayerWeights, spec: ModelSpec, options: DecoderLayerOptions): tf.Tensor3D {
  return decoderLayerWithCache(x, w, spec, options).hidden;
}

/** The layer, also returning the keys/values of all positions so far (past + x) for the next step. */
export function decoderLayerWithCache(x: tf.Tensor3D, w: LayerWeights, spec: ModelSpec, options: DecoderLayerOptions): { hidden: tf.Tensor3D; present: KeyValue } {
  const { hooks } = options;
  const [B, T] = x.shape;
  const H = spec.numHeads;
  const nKv = spec.numKvHeads;
  const dh = spec.headDim;
  const groups = H / nKv;
  const past = options.past?.key.shape[2] ?? 0;
  const S = past + T;
  if (spec.slidingWindow !== undefined && S > spec.slidingWindow) {
    throw new UnsupportedModelError(`sequence length ${S} exceeds the model's sliding window ${spec.slidingWindow}; sliding-window attention is not implemented`);
  }
  const weight = (key: ProjectionKey): tf.Tensor2D => hooks?.transformWeight?.(key, w.proj[key]) ?? w.proj[key];
  const bias = (key: ProjectionKey): tf.Tensor1D | undefined => {
    const b = w.bias[key];
    return b && hooks?.transformBias ? hooks.transformBias(key, b) : b;
  };

  const h = rmsNorm(x, w.inputNorm, spec.rmsNormEps);
  const q = linear(h, weight('q_proj'), bias('q_proj'));
  const k = linear(h, weight('k_proj'), bias('k_proj'));
  const v = linear(h, weight('v_proj'), bias('v_proj')) as tf.Tensor3D;

  const qh = rotaryHeads(q as tf.Tensor3D, H, options.rope);
  let kh = rotaryHeads(k as tf.Tensor3D, nKv, options.rope);
  let vh = tf.transpose(tf.reshape(v, [B, T, nKv, dh]), [0, 2, 1, 3]) as tf.Tensor4D;
  if (options.past) {
    kh = tf.concat([options.past.key, kh], 2);
    vh = tf.concat([options.past.value, vh], 2);
  }
  // GQA as transformers' repeat_kv (query head h reads KV head h // groups), without copying
  // the keys: the `groups` query heads of a KV head are stacked along the time axis.
  const qGrouped = tf.reshape(qh, [B, nKv, groups * T, dh]);
  let scores = tf.mul(tf.matMul(qGrouped, kh, false, true), 1 / Math.sqrt(dh));
  const mask = causalMask(T, past);
  if (mask) scores = tf.add(tf.reshape(scores, [B, H, T, S]), mask);
  const probs = tf.reshape(tf.softmax(scores, -1), [B, nKv, groups * T, S]);
  const context = tf.reshape(tf.matMul(probs, vh), [B, H, T, dh]);
  const attention = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B, T, H * dh]) as tf.Tensor3D;

  const afterAttention = tf.add(x, linear(attention, weight('o_proj'), bias('o_proj'))) as tf.Tensor3D;
  const h2 = rmsNorm(afterAttention, w.postAttentionNorm, spec.rmsNormEps);
  const gate = linear(h2, weight('gate_proj'), bias('gate_proj')) as tf.Tensor3D;
  const up = linear(h2, weight('up_proj'), bias('up_proj')) as tf.Tensor3D;
  const observe = options.observe;
  const gated = gatedUp(gate, up, observe ? (gateAct) => observe({ layer: options.layer, attention, gate: gateAct }) : undefined);
  const down = linear(gated, weight('down_proj'), bias('down_proj'));
  return { hidden: tf.add(afterAttention, down) as tf.Tensor3D, present: { key: kh, value: vh } };
}

/** [T, past + T] additive mask: query t (position past + t) sees keys 0 … past + t; none when nothing is hidden. */
function causalMask(T: number, past: number): tf.Tensor2D | undefined {
  if (T === 1) return undefined;
  const S = past + T;
  const m = new Float32Array(T * S);
  for (let t = 0; t < T; t++) for (let s = past + t + 1; s < S; s++) m[t * S + s] = MASKED;
  return tf.tensor2d(m, [T, S]);
}
