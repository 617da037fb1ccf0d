/**
 * Where a forward pass gets its weights from. The streaming source reads one decoder layer at
 * a time from a checkpoint (decoded to float32), embedding rows by token id, and lm_head in
 * vocab row blocks, so memory stays near one layer whatever the depth (every read is refused
 * when it holds NaN/Inf, finite-check.ts); the resident source
 * (model-weights.ts) serves tensors already in memory. The forward passes are written once
 * against this interface.
 */
import * as tf from '@tensorflow/tfjs';
import type { Checkpoint } from '../io/checkpoint.js';
import { checkCheckpointTensors, globalTensorName, layerTensors } from './architecture.js';
import { parseModelConfig } from './config.js';
import type { LayerWeights } from './decoder-layer.js';
import { readFiniteFloat32, readFiniteRowsFloat32 } from './finite-check.js';
import type { ProjectionKey } from './layer-hooks.js';
import type { ModelSpec } from './model-spec.js';

/** Tensors handed out by a source; `release()` frees them when the source loaded them for the caller. */
export interface Lease<T> {
  readonly value: T;
  release(): void;
}

export interface WeightSource {
  readonly spec: ModelSpec;
  loadLayer(layer: number): Promise<Lease<LayerWeights>>;
  /** Embedding rows of the given token ids (any order, repeats allowed), [ids.length, D] row-major. */
  embeddingRows(ids: ArrayLike<number>): Promise<Float32Array>;
  finalNorm(): Promise<Lease<tf.Tensor1D>>;
  /** lm_head rows [start, end) as a [end − start, D] tensor. */
  lmHeadRows(start: number, end: number): Promise<Lease<tf.Tensor2D>>;
}

/** Parses config.json and checks the checkpoint holds exactly this model's tensors. */
export function describeCheckpoint(checkpoint: Checkpoint): { spec: ModelSpec; warnings: string[] } {
  const spec = parseModelConfig(checkpoint.config, `${checkpoint.dir}/config.json`);
  const { warnings } = checkCheckpointTensors(spec, checkpoint.tensors(), checkpoint.dir);
  return { spec, warnings };
}

/** Builds LayerWeights from a name → tensor lookup, by the architecture table. */
export function assembleLayerWeights(spec: ModelSpec, layer: number, get: (name: string) => tf.Tensor): LayerWeights {
  const proj: Partial<Record<ProjectionKey, tf.Tensor2D>> = {};
  const bias: Partial<Record<ProjectionKey, tf.Tensor1D>> = {};
  let inputNorm: tf.Tensor1D | undefined;
  let postAttentionNorm: tf.Tensor1D | undefined;
  for (const t of layerTensors(spec, layer)) {
    const tensor = get(t.name);
    if (t.role === 'input_layernorm') inputNorm = tensor as tf.Tensor1D;
    else if (t.role === 'post_attention_layernorm') postAttentionNorm = tensor as tf.Tensor1D;
    else if (t.param === 'weight') proj[t.role] = tensor as tf.Tensor2D;
    else bias[t.role] = tensor as tf.Tensor1D;
  }
  return { inputNorm: inputNorm!, postAttentionNorm: postAttentionNorm!, proj: proj as Record<ProjectionKey, tf.Tensor2D>, bias };
}

/** Embedding tables up to this size are read whole once; larger ones row by row. */
const WHOLE_EMBEDDING_BYTES = 64 * 1024 * 1024;
/** Rows closer than this are read in one piece. */
const ROW_GAP = 8;

export class CheckpointWeightSource implements WeightSource {
  private smallEmbedding: Float32Array | undefined;

  constructor(readonly checkpoint: Checkpoint, readonly spec: ModelSpec) {}

  async loadLayer(layer: number): Promise<Lease<LayerWeights>> {
    const loaded = new Map<string, tf.Tensor>();
    try {
      for (const t of layerTensors(this.spec, layer)) {
        loaded.set(t.name, tf.tensor(await readFiniteFloat32(this.checkpoint, t.name), [...t.dims], 'float32'));
      }
    } catch (e) {
      for (const t of loaded.values()) t.dispose();
      throw e;
    }
    const value = assembleLayerWeights(this.spec, layer, (n) => loaded.get(n)!);
    return { value, release: () => { for (const t of loaded.values()) t.dispose(); } };
  }

  async embeddingRows(ids: ArrayLike<number>): Promise<Float32Array> {
    const name = globalTensorName(this.spec, 'embed_tokens');
    const D = this.spec.hiddenSize;
    const out = new Float32Array(ids.length * D);
    const info = this.checkpoint.info(name);
    const bytes = info.end - info.begin;
    if (bytes <= WHOLE_EMBEDDING_BYTES) {
      this.smallEmbedding ??= await readFiniteFloat32(this.checkpoint, name);
      for (let i = 0; i < ids.length; i++) out.set(this.smallEmbedding.subarray(ids[i]! * D, (ids[i]! + 1) * D), i * D);
      return out;
    }
    const unique = [...new Set(Array.from(ids))].sort((a, b) => a - b);
    const rowOf = new Map<number, Float32Array>();
    let i = 0;
    while (i < unique.length) {
      let j = i;
      while (j + 1 < unique.length && unique[j + 1]! - unique[j]! <= ROW_GAP) j++;
      const start = unique[i]!;
      const block = await readFiniteRowsFloat32(this.checkpoint, name, start, unique[j]! + 1);
      for (let k = i; k <= j; k++) rowOf.set(unique[k]!, block.subarray((unique[k]! - start) * D, (unique[k]! - start + 1) * D));
      i = j + 1;
    }
    for (let k = 0; k < ids.length; k++) out.set(rowOf.get(ids[k]!)!, k * D);
    return out;
  }

  async finalNorm(): Promise<Lease<tf.Tensor1D>> {
    const value = tf.tensor1d(await readFiniteFloat32(this.checkpoint, globalTensorName(this.spec, 'final_norm')));
    return { value, release: () => value.dispose() };
  }

  async lmHeadRows(start: number, end: number): Promise<Lease<tf.Tensor2D>> {
    const name = globalTensorName(this.spec, 'lm_head');
    const value = tf.tensor2d(await readFiniteRowsFloat32(this.checkpoint, name, start, end), [end - start, this.spec.hiddenSize]);
    return { value, release: () => value.dispose() };
  }
}
