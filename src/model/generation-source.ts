/**
 * Which weights generation runs on: the whole model in memory when it fits the budget (fast:
 * each step reuses the weights), else the streaming checkpoint source (each step re-reads the
 * layers; slow, but memory stays at one layer plus the key/value cache).
 */
import * as tf from '@tensorflow/tfjs';
import type { Checkpoint } from '../io/checkpoint.js';
import { expectedTensors } from './architecture.js';
import { estimateForwardMemory } from './memory-estimate.js';
import type { ModelSpec } from './model-spec.js';
import { ResidentWeightSource, disposeModelWeights, loadModelWeights } from './model-weights.js';
import { CheckpointWeightSource, type WeightSource } from './weight-source.js';
import { PREFILL_CHUNK } from './generate.js';
import { checkWasmHeap, tfHeapAllowance } from './wasm-heap-limit.js';

export interface GenerationSource {
  readonly source: WeightSource;
  readonly resident: boolean;
  /** Bytes the resident model would take (float32 weights + cache + activations). */
  readonly residentBytes: number;
  dispose(): void;
}

/** float32 weights, the key/value cache of `batch` sequences of `totalLength`, and one prefill piece's activations. */
export function residentGenerationBytes(spec: ModelSpec, batch: number, promptLength: number, totalLength: number): number {
  return 4 * modelParams(spec) + generationWorkBytes(spec, batch, promptLength, totalLength);
}

/**
 * Tensor memory of generation besides the weights: the key/value cache, the activations of one
 * prefill piece (generate.ts PREFILL_CHUNK positions) and its attention scores against the
 * whole cache (scores and softmax, [batch, heads, piece, totalLength]).
 */
export function generationWorkBytes(spec: ModelSpec, batch: number, promptLength: number, totalLength: number): number {
  const piece = Math.min(promptLength, PREFILL_CHUNK);
  const cache = 4 * 2 * spec.numLayers * batch * spec.numKvHeads * spec.headDim * totalLength;
  const scores = 4 * 2 * batch * spec.numHeads * piece * totalLength;
  return cache + estimateForwardMemory(spec, batch, piece).activationBytes + scores;
}

/**
 * Prompts by length, in order of first appearance: generate runs one batch per length (rows of an
 * --input-ids file padded to one width differ), each continued from its own end.
 */
export function promptGroups(prompts: readonly Int32Array[]): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  prompts.forEach((p, i) => {
    const rows = groups.get(p.length);
    if (rows) rows.push(i);
    else groups.set(p.length, [i]);
  });
  return groups;
}

/**
 * The batch that needs the most memory among the length groups, which run one at a time: what
 * generation has to hold at once (sizing all prompts at the longest length refused runs that fit).
 */
export function largestGenerationBatch(spec: ModelSpec, groups: ReadonlyMap<number, readonly number[]>, maxNewTokens: number): { batch: number; promptLength: number; totalLength: number } {
  let best = { batch: 0, promptLength: 0, totalLength: 0 };
  let bestBytes = -1;
  for (const [length, rows] of groups) {
    const bytes = generationWorkBytes(spec, rows.length, length, length + maxNewTokens);
    if (bytes > bestBytes) {
      bestBytes = bytes;
      best = { batch: rows.length, promptLength: length, totalLength: length + maxNewTokens };
    }
  }
  return best;
}

function modelParams(spec: ModelSpec): number {
  let params = 0;
  for (const dims of expectedTensors(spec).values()) params += dims.reduce((p, d) => p * d, 1);
  return params;
}

export async function chooseGenerationSource(checkpoint: Checkpoint, spec: ModelSpec, budget: number, batch: number, promptLength: number, totalLength: number): Promise<GenerationSource> {
  const residentBytes = residentGenerationBytes(spec, batch, promptLength, totalLength);
  const work = generationWorkBytes(spec, batch, promptLength, totalLength);
  if (residentBytes > budget || residentBytes > tfHeapAllowance(tf.getBackend())) {
    // Streamed: one layer's weights at a time, and the work; refused when even that cannot fit the wasm heap.
    const layer = estimateForwardMemory(spec, batch, 1).layerBytes;
    checkWasmHeap(tf.getBackend(), work + layer, `generating ${batch} × ${totalLength} tokens (key/value cache and attention of ${Math.min(promptLength, PREFILL_CHUNK)}-position prompt pieces)`, 'use fewer or shorter prompts, fewer --max-new-tokens, or another backend (--backend webgpu, tensorflow or cpu)');
    return { source: new CheckpointWeightSource(checkpoint, spec), resident: false, residentBytes, dispose: () => {} };
  }
  const { model } = await loadModelWeights(checkpoint);
  return { source: new ResidentWeightSource(model), resident: true, residentBytes, dispose: () => disposeModelWeights(model) };
}
