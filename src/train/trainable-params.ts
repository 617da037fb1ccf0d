/**
 * What a training run changes, per setting (APEX-METHOD §4), and how many parameters that is:
 *
 * - `operators`: only the APEX operators (M, a, b); every model tensor frozen.
 * - `structured`: the operators plus the rows/columns of the directly-tuned units N ∪ P ∪ E of
 *   every layer: rows of q/k/v/gate/up, columns of o/down; optionally the embeddings and
 *   lm_head; norms frozen. Head units are KV groups: k/v rows are the group's KV head rows,
 *   q rows and o columns those of the group's query heads (HF `repeat_kv` order). Biases of
 *   q/k/v/gate/up train on the tuned rows **(ours: they belong to the rows)**; o/down biases
 *   are not per unit and stay frozen.
 * - `full`: every model tensor plus the operators. `vanilla`: every model tensor.
 * - `lora`: only the adapters (counted by src/train/lora.ts).
 *
 * Which axis of a tensor carries which units comes from the architecture table
 * (src/model/architecture.ts). A partially trained tensor is described by the rows or the
 * columns that train; its mask is a broadcastable [rows, 1] / [1, cols] tensor, so a 7B
 * model's masks cost a vector per tensor, not a copy of the weights.
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../errors.js';
import { type LayerTensor, globalTensors, layerTensors } from '../model/architecture.js';
import type { ModelSpec } from '../model/model-spec.js';
import { monarchParamCount } from '../ops/monarch.js';
import type { LayerSelection, Selection } from '../ops/selection.js';
import { headRows } from '../ops/unit-rows.js';

export type TrainingSetting = 'operators' | 'structured' | 'full' | 'vanilla' | 'lora';

/** One model tensor that trains directly, whole or in part. */
export interface DirectTrainable {
  readonly name: string;
  readonly shape: readonly number[];
  /** Trainable rows (axis 0), ascending; absent with `columns` absent = the whole tensor. */
  readonly rows?: Int32Array;
  /** Trainable columns (axis 1), ascending. */
  readonly columns?: Int32Array;
}

export interface StructuredOptions {
  /** Also train the embeddings and lm_head (whole; one tensor when tied). */
  readonly trainEmbeddings?: boolean;
}

/** Every tensor of the model, name and shape, from the architecture table. */
export function modelTensors(spec: ModelSpec): { name: string; shape: readonly number[] }[] {
  const out = globalTensors(spec).map((g) => ({ name: g.name, shape: g.dims }));
  for (let i = 0; i < spec.numLayers; i++) for (const t of layerTensors(spec, i)) out.push({ name: t.name, shape: t.dims });
  return out;
}

/** Units a layer tunes directly: N ∪ P ∪ E, ascending. */
export function tunedUnits(selection: Selection): Int32Array {
  return Int32Array.from(new Set([...selection.N, ...selection.P, ...selection.E])).sort();
}

/** Query heads of the given KV groups, ascending (HF `repeat_kv`: group g holds heads g·H/nKv + j). */
export function queryHeadsOf(groups: ArrayLike<number>, spec: ModelSpec): Int32Array {
  const perGroup = spec.numHeads / spec.numKvHeads;
  const heads: number[] = [];
  for (const g of Array.from(groups)) for (let j = 0; j < perGroup; j++) heads.push(g * perGroup + j);
  return Int32Array.from(heads).sort();
}

/** The rows or columns (along the table's unit axis) of a layer tensor that belong to tuned units. */
function tunedIndices(spec: ModelSpec, t: LayerTensor, heads: Int32Array, channels: Int32Array): Int32Array {
  switch (t.units) {
    case 'head':
      return headRows(queryHeadsOf(heads, spec), spec.headDim);
    case 'kv-head':
      return headRows(heads, spec.headDim);
    case 'channel':
      return channels;
    case 'none':
      return new Int32Array(0);
  }
}

/**
 * The model tensors that train directly under `setting`. `selections` (one per layer, from
 * `selectModel`) is required for `structured`.
 */
export function directTrainables(
  spec: ModelSpec,
  setting: TrainingSetting,
  selections?: readonly LayerSelection[],
  options: StructuredOptions = {},
): DirectTrainable[] {
  switch (setting) {
    case 'operators':
    case 'lora':
      return [];
    case 'full':
    case 'vanilla':
      return modelTensors(spec);
    case 'structured':
      if (selections === undefined || selections.length !== spec.numLayers) {
        throw new UsageError(`the structured setting needs a selection for each of the ${spec.numLayers} layers`);
      }
      return structuredTrainables(spec, selections, options);
  }
}

function structuredTrainables(spec: ModelSpec, selections: readonly LayerSelection[], options: StructuredOptions): DirectTrainable[] {
  const out: DirectTrainable[] = [];
  if (options.trainEmbeddings) {
    for (const g of globalTensors(spec)) if (g.role !== 'final_norm') out.push({ name: g.name, shape: g.dims });
  }
  selections.forEach((selection, layer) => {
    const heads = tunedUnits(selection.heads);
    const channels = tunedUnits(selection.channels);
    for (const t of layerTensors(spec, layer)) {
      const indices = tunedIndices(spec, t, heads, channels);
      if (indices.length === 0) continue;
      out.push(t.unitAxis === 'cols' ? { name: t.name, shape: t.dims, columns: indices } : { name: t.name, shape: t.dims, rows: indices });
    }
  });
  return out;
}

/** Elements of a tensor. */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Elements of a direct trainable that can change. */
export function trainableEntryCount(t: DirectTrainable): number {
  const total = elementCount(t.shape);
  if (t.rows !== undefined) return (total / (t.shape[0] ?? 1)) * t.rows.length;
  if (t.columns !== undefined) return (total / (t.shape[1] ?? 1)) * t.columns.length;
  return total;
}

/**
 * The AdamW mask of a partially trained tensor ([rows, 1] or [1, cols] of 0/1, or the
 * vector itself for a bias), undefined when the whole tensor trains. The caller disposes it.
 */
export function trainableMask(t: DirectTrainable): tf.Tensor | undefined {
  const axis = t.rows !== undefined ? 0 : t.columns !== undefined ? 1 : undefined;
  if (axis === undefined) return undefined;
  const indices = (axis === 0 ? t.rows : t.columns) as Int32Array;
  const length = t.shape[axis] as number;
  const vector = new Float32Array(length);
  for (const i of indices) vector[i] = 1;
  const maskShape = t.shape.map((d, i) => (i === axis ? d : 1));
  return tf.tensor(vector, maskShape, 'float32');
}

/** Parameters of the APEX operators of a stage: per layer M (Monarch) + a + one b per output-side weight. */
export function operatorParamCount(selections: readonly LayerSelection[], headDim: number): number {
  let total = 0;
  for (const s of selections) {
    const nHeads = s.heads.P.length * headDim;
    if (nHeads > 0) total += monarchParamCount(nHeads) + 2 * nHeads; // a, b of v_proj
    const nChannels = s.channels.P.length;
    if (nChannels > 0) total += monarchParamCount(nChannels) + 3 * nChannels; // a, b of gate, b of up
  }
  return total;
}

/** Parameters of the model (every tensor once; a tied lm_head is not a separate tensor). */
export function modelParamCount(spec: ModelSpec): number {
  return modelTensors(spec).reduce((sum, t) => sum + elementCount(t.shape), 0);
}

export interface TrainableSummary {
  readonly setting: TrainingSetting;
  /** Model entries that change directly. */
  readonly direct: number;
  /** APEX operator parameters. */
  readonly operators: number;
  /** LoRA adapter parameters. */
  readonly adapters: number;
  /** direct + operators + adapters. */
  readonly trainable: number;
  readonly modelParams: number;
  /** trainable / modelParams. */
  readonly fraction: number;
}

/** The trainable-parameter line every run prints and records. */
export function summarizeTrainable(
  setting: TrainingSetting,
  direct: readonly DirectTrainable[],
  modelParams: number,
  extra: { readonly operators?: number; readonly adapters?: number } = {},
): TrainableSummary {
  const directCount = direct.reduce((sum, t) => sum + trainableEntryCount(t), 0);
  const operators = extra.operators ?? 0;
  const adapters = extra.adapters ?? 0;
  const trainable = directCount + operators + adapters;
  return {
    setting,
    direct: directCount,
    operators,
    adapters,
    trainable,
    modelParams,
    fraction: modelParams > 0 ? trainable / modelParams : 0,
  };
}
