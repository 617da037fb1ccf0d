/**
 * Which weights generation runs on: the whole model in memory when it fits the budget (fast:
 * each step reuses the weights), else the streaming checkpoint source (each step re-reads the
 * layers; slow, but memory stays at one layer plus the key/value cache).
 */
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

/** One generate call: prompts of one length, by their index among all prompts. */
export interface GenerationBatch {
  readonly length: number;
  readonly rows: readonly number[];
}

export interface GenerationPlan {
  /** Whether the whole model is held in memory (else its layers are streamed at every step). */
  readonly resident: boolean;
  /** What the resident model with the largest unsplit batch would take (the budget's yardstick). */
  readonly residentBytes: number;
  /** At most this many prompts run at once. */
  readonly rowsPerBatch: number;
  /** Batches in order: one per prompt length, split into runs of rowsPerBatch rows. */
  readonly batches: readonly GenerationBatch[];
}

/**
 * How generation runs: the model resident when its weights and a batch of at least one prompt fit
 * the budget and the backend's heap, else streamed. Batches of one length run one after the other,
 * and a batch whose key/value cache and activations do not fit is split into smaller ones (the
 * same tokens: rows do not interact, and each row samples from its own seed, generate.ts rowSeed)
 * instead of streaming the model or refusing. Resident runs of smaller batches beat streaming:
 * the streamed model is re-read from disk at every step, and the arithmetic is the same.
 */
export function planGeneration(spec: ModelSpec, groups: ReadonlyMap<number, readonly number[]>, maxNewTokens: number, budget: number, backend: string): GenerationPlan {
  const heapAllowance = tfHeapAllowance(backend);
  const largestGroup = Math.max(...[...groups.values()].map((rows) => rows.length));
  /** The most the batches need at once when each holds at most `cap` rows (they run one at a time). */
  const work = (cap: number) => Math.max(...[...groups].map(([length, rows]) => generationWorkBytes(spec, Math.min(cap, rows.length), length, length + maxNewTokens)));
  const weights = 4 * modelParams(spec);
  const residentLimit = Math.min(budget, heapAllowance);
  const residentBytes = weights + work(largestGroup);
  let resident: boolean;
  let cap: number;
  if (weights + work(1) <= residentLimit) {
    resident = true;
    cap = largestFitting(largestGroup, (c) => weights + work(c) <= residentLimit);
  } else {
    // Streamed: one layer's weights at a time (for the batch's own activations) plus the work.
    resident = false;
    const streamed = (c: number) => work(c) + estimateForwardMemory(spec, c, 1).layerBytes;
    if (streamed(1) > heapAllowance) {
      const [length] = [...groups].reduce((a, b) => (generationWorkBytes(spec, 1, b[0], b[0] + maxNewTokens) > generationWorkBytes(spec, 1, a[0], a[0] + maxNewTokens) ? b : a));
      checkWasmHeap(backend, streamed(1), `generating one ${length + maxNewTokens}-token sequence (key/value cache and attention of ${Math.min(length, PREFILL_CHUNK)}-position prompt pieces)`, 'use a shorter prompt, fewer --max-new-tokens, or another backend (--backend webgpu, tensorflow or cpu)');
    }
    cap = largestFitting(largestGroup, (c) => streamed(c) <= heapAllowance);
  }
  const batches: GenerationBatch[] = [];
  for (const [length, rows] of groups) {
    for (let start = 0; start < rows.length; start += cap) batches.push({ length, rows: rows.slice(start, start + cap) });
  }
  return { resident, residentBytes, rowsPerBatch: cap, batches };
}

/** The largest c in [1, max] with fits(c), for fits monotone (true up to some c, false after); 1 when none. */
function largestFitting(max: number, fits: (c: number) => boolean): number {
  if (fits(max)) return max;
  let lo = 1;
  let hi = max;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

function modelParams(spec: ModelSpec): number {
  let params = 0;
  for (const dims of expectedTensors(spec).values()) params += dims.reduce((p, d) => p * d, 1);
  return params;
}

/** The weights generation reads, as the plan says: the whole model loaded, or the checkpoint streamed. */
export async function openGenerationSource(checkpoint: Checkpoint, spec: ModelSpec, plan: GenerationPlan): Promise<GenerationSource> {
  if (!plan.resident) return { source: new CheckpointWeightSource(checkpoint, spec), resident: false, residentBytes: plan.residentBytes, dispose: () => {} };
  const { model } = await loadModelWeights(checkpoint);
  return { source: new ResidentWeightSource(model), resident: true, residentBytes: plan.residentBytes, dispose: () => disposeModelWeights(model) };
}
