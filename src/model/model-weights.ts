/**
 * A whole model held in memory as float32 tensors named by their checkpoint names (variables
 * where training wants them), and the differentiable forward pass over it that training uses.
 * It also serves as a WeightSource, so evaluation and generation run on it unchanged.
 */
import * as tf from '@tensorflow/tfjs';
import type { Checkpoint } from '../io/checkpoint.js';
import { expectedTensors, globalTensorName } from './architecture.js';
import { decoderLayer, type LayerWeights } from './decoder-layer.js';
import { readFiniteFloat32 } from './finite-check.js';
import type { LayerHooks, LayerObserver } from './layer-hooks.js';
import { linear, rmsNorm } from './layer-math.js';
import type { ModelSpec } from './model-spec.js';
import { recomputedDecoderLayer } from './recomputed-layer.js';
import { ropeInverseFrequencies, ropeTensors } from './rope.js';
import { readFloat32 } from './tensor-read.js';
import { assembleLayerWeights, describeCheckpoint, type Lease, type WeightSource } from './weight-source.js';

export interface ModelWeights {
  readonly spec: ModelSpec;
  /** Every tensor the model uses, by checkpoint name (lm_head absent when tied). */
  readonly tensors: ReadonlyMap<string, tf.Tensor>;
}

export interface ModelWeightsOptions {
  /** Names that become trainable tf.Variables (the rest stay constant tensors). */
  trainable?: (name: string) => boolean;
  /** Prefix for variable names (tfjs variable names are global; two models need different prefixes). */
  variablePrefix?: string;
}

/** Loads all of a checkpoint's model tensors, decoded to float32 (NaN/Inf refused, naming the tensor). */
export async function loadModelWeights(checkpoint: Checkpoint, options: ModelWeightsOptions = {}): Promise<{ model: ModelWeights; warnings: string[] }> {
  const { spec, warnings } = describeCheckpoint(checkpoint);
  const tensors = new Map<string, tf.Tensor>();
  try {
    for (const [name, dims] of expectedTensors(spec)) {
      tensors.set(name, makeTensor(name, await readFiniteFloat32(checkpoint, name), dims, options));
    }
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  }
  return { model: { spec, tensors }, warnings };
}

/** A model from float32 arrays in memory (tests, converted weights), with the same checks on names and sizes. */
export function modelWeightsFromArrays(spec: ModelSpec, arrays: ReadonlyMap<string, Float32Array>, options: ModelWeightsOptions = {}): ModelWeights {
  const tensors = new Map<string, tf.Tensor>();
  for (const [name, dims] of expectedTensors(spec)) {
    const values = arrays.get(name);
    if (!values) throw new Error(`modelWeightsFromArrays: missing '${name}'`);
    if (values.length !== dims.reduce((p, d) => p * d, 1)) throw new Error(`modelWeightsFromArrays: '${name}' has ${values.length} values, expected [${dims.join(', ')}]`);
    tensors.set(name, makeTensor(name, values, dims, options));
  }
  return { spec, tensors };
}

function makeTensor(name: string, values: Float32Array, dims: readonly number[], options: ModelWeightsOptions): tf.Tensor {
  const t = tf.tensor(values, [...dims], 'float32');
  if (!options.trainable?.(name)) return t;
  const v = tf.variable(t, true, `${options.variablePrefix ?? ''}${name}`);
  t.dispose();
  return v;
}

export function disposeModelWeights(model: ModelWeights): void {
  for (const t of model.tensors.values()) t.dispose();
}

function get(model: ModelWeights, name: string): tf.Tensor {
  const t = model.tensors.get(name);
  if (!t) throw new Error(`model has no tensor '${name}'`);
  return t;
}

/** The lm_head weight [V, D] (the embeddings when tied). */
export function lmHeadOf(model: ModelWeights): tf.Tensor2D {
  return get(model, globalTensorName(model.spec, 'lm_head')) as tf.Tensor2D;
}

export function layerWeightsOf(model: ModelWeights, layer: number): LayerWeights {
  return assembleLayerWeights(model.spec, layer, (n) => get(model, n));
}

export interface ForwardLogitsOptions {
  hooks?: (layer: number) => LayerHooks | undefined;
  observe?: LayerObserver;
  /**
   * Recompute each decoder layer's activations in the backward pass instead of keeping them on
   * the tape (recomputed-layer.ts): less memory, one more forward of the layers per backward.
   * Training only; the value and the gradients are the same.
   */
  recompute?: boolean;
}

/**
 * Logits [B, T, V] for token ids [B, T] (int32), differentiable with respect to every tensor of
 * the model and whatever the hooks use. Intermediates are freed; only the logits are returned.
 */
export function forwardLogits(model: ModelWeights, ids: tf.Tensor2D, options: ForwardLogitsOptions = {}): tf.Tensor3D {
  return tf.tidy(() => {
    const logits = linear(forwardHidden(model, ids, options), lmHeadOf(model));
    return logits as tf.Tensor3D;
  });
}

/** Final-norm hidden states [B, T, D] (the input of lm_head). */
export function forwardHidden(model: ModelWeights, ids: tf.Tensor2D, options: ForwardLogitsOptions = {}): tf.Tensor3D {
  const { spec } = model;
  return tf.tidy(() => {
    const T = ids.shape[1];
    const rope = ropeTensors(ropeInverseFrequencies(spec.rope, spec.headDim), 0, T);
    let x = tf.gather(get(model, globalTensorName(spec, 'embed_tokens')), ids) as tf.Tensor3D;
    for (let layer = 0; layer < spec.numLayers; layer++) {
      const hooks = options.hooks?.(layer);
      const layerOptions = { layer, rope, ...(hooks ? { hooks } : {}), ...(options.observe ? { observe: options.observe } : {}) };
      x = (options.recompute ? recomputedDecoderLayer : decoderLayer)(x, layerWeightsOf(model, layer), spec, layerOptions);
    }
    return rmsNorm(x, get(model, globalTensorName(spec, 'final_norm')) as tf.Tensor1D, spec.rmsNormEps);
  });
}

const noRelease = () => {};

/** Serves an in-memory model to the streaming forward and to generation (nothing is freed). */
export class ResidentWeightSource implements WeightSource {
  readonly spec: ModelSpec;
  constructor(readonly model: ModelWeights) {
    this.spec = model.spec;
  }

  async loadLayer(layer: number): Promise<Lease<LayerWeights>> {
    return { value: layerWeightsOf(this.model, layer), release: noRelease };
  }

  async embeddingRows(ids: ArrayLike<number>): Promise<Float32Array> {
    const rows = tf.tidy(() => tf.gather(get(this.model, globalTensorName(this.spec, 'embed_tokens')), tf.tensor1d(Array.from(ids), 'int32')));
    try {
      return await readFloat32(rows);
    } finally {
      rows.dispose();
    }
  }

  async finalNorm(): Promise<Lease<tf.Tensor1D>> {
    return { value: get(this.model, globalTensorName(this.spec, 'final_norm')) as tf.Tensor1D, release: noRelease };
  }

  async lmHeadRows(start: number, end: number): Promise<Lease<tf.Tensor2D>> {
    const w = get(this.model, globalTensorName(this.spec, 'lm_head')) as tf.Tensor2D;
    if (start === 0 && end === w.shape[0]) return { value: w, release: noRelease };
    const value = tf.slice(w, [start, 0], [end - start, w.shape[1]]);
    return { value, release: () => value.dispose() };
  }
}
