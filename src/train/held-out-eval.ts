/**
 * Periodic held-out evaluation during training: mean next-token NLL and perplexity of the
 * model as it trains (operator or LoRA hooks applied), over every target of the evaluation
 * set, in micro-batches. Token-weighted: the mean is over targets, not over batches.
 */
import * as tf from '@tensorflow/tfjs';
import { readScalar } from '../model/tensor-read.js';
import type { LayerHooks } from '../model/layer-hooks.js';
import type { ModelWeights } from '../model/model-weights.js';
import type { SequenceSet } from './data.js';
import { prepareTransforms } from './prepared-transforms.js';
import { modelLoss } from './model-loss.js';
import { yieldForSignals } from '../util/yield-for-signals.js';

export interface HeldOutResult {
  /** Mean NLL in nats per target token. */
  readonly loss: number;
  readonly ppl: number;
  readonly targets: number;
}

/** Input ids [B, T] and loss mask [B, T] of the given sequences of a set (the caller disposes). */
export function batchTensors(set: SequenceSet, indices: readonly number[]): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  const T = set.seqLen;
  const ids = new Int32Array(indices.length * T);
  const mask = new Float32Array(indices.length * T).fill(1);
  indices.forEach((s, b) => {
    const seq = set.sequences[s]!;
    if (seq.length !== T) throw new RangeError(`sequence ${s} has ${seq.length} tokens, expected ${T}`);
    ids.set(seq, b * T);
    const m = set.lossMasks?.[s];
    if (m !== undefined) for (let t = 0; t < T; t++) mask[b * T + t] = m[t]!;
  });
  return { ids: tf.tensor2d(ids, [indices.length, T], 'int32'), mask: tf.tensor2d(mask, [indices.length, T]) };
}

/** Prediction targets of a sequence: positions t ≥ 1 with mask 1 (all of them without a mask). */
export function targetCount(set: SequenceSet, index: number): number {
  const m = set.lossMasks?.[index];
  if (m === undefined) return set.seqLen - 1;
  let n = 0;
  for (let t = 1; t < m.length; t++) n += m[t]!;
  return n;
}

/**
 * Mean next-token loss of `set` under the model with `hooks`. The hooks' weight transforms are
 * computed once for the whole evaluation when it has several batches (`prepare`, default on):
 * the weights do not change while it runs, and the transformed tensors are the same bits.
 */
export async function evaluateHeldOut(
  model: ModelWeights,
  set: SequenceSet,
  options: {
    batchSize: number;
    hooks?: (layer: number) => LayerHooks | undefined;
    prepare?: boolean;
    signal?: AbortSignal;
    /**
     * Run each decoder layer as training's activation recomputation does (recomputed-layer.ts):
     * without a tape, a layer's intermediates are freed as soon as it ends instead of at the end
     * of the forward, so the evaluation holds every layer's output and one layer's intermediates.
     * The same values.
     */
    recompute?: boolean;
  },
): Promise<HeldOutResult> {
  const prepared = options.hooks && options.prepare !== false && set.sequences.length > options.batchSize ? prepareTransforms(model, options.hooks) : undefined;
  try {
    return await evaluateBatches(model, set, options.batchSize, prepared?.hooks ?? options.hooks, options.signal, options.recompute ?? false);
  } finally {
    prepared?.dispose();
  }
}

async function evaluateBatches(
  model: ModelWeights,
  set: SequenceSet,
  batchSize: number,
  hooks: ((layer: number) => LayerHooks | undefined) | undefined,
  signal: AbortSignal | undefined,
  recompute: boolean,
): Promise<HeldOutResult> {
  let nll = 0;
  let targets = 0;
  for (let start = 0; start < set.sequences.length; start += batchSize) {
    // Polled between batches when the caller can stop here (before training, nothing is lost).
    if (signal) await yieldForSignals(signal);
    const indices = Array.from({ length: Math.min(batchSize, set.sequences.length - start) }, (_, i) => start + i);
    const { ids, mask } = batchTensors(set, indices);
    try {
      const sum = tf.tidy(() => modelLoss(model, ids, mask, { ...(hooks ? { hooks } : {}), reduction: 'sum', ...(recompute ? { recompute } : {}) }));
      try {
        nll += await readScalar(sum);
      } finally {
        sum.dispose();
      }
    } finally {
      tf.dispose([ids, mask]);
    }
    for (const i of indices) targets += targetCount(set, i);
  }
  const loss = targets > 0 ? nll / targets : 0;
  return { loss, ppl: Math.exp(loss), targets };
}
