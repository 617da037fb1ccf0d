/**
 * The training loss of a model on a micro-batch: forward, lm_head and the causal LM loss
 * (loss.ts). Where one [tokens, vocab] logits tensor would exceed what the backend can bind to a
 * shader (webgpu's maxStorageBufferBindingSize; Dawn rejects the command and the step's results
 * are lost: webgpu-guards.ts), the logits are made and scored a block of positions at a time;
 * elsewhere, and below that size, in one piece as before.
 */
import * as tf from '@tensorflow/tfjs';
import { linear } from '../model/layer-math.js';
import { forwardHidden, forwardLogits, lmHeadOf, type ForwardLogitsOptions, type ModelWeights } from '../model/model-weights.js';
import { maxStorageBindingBytes } from '../ops/webgpu-programs.js';
import { causalLmLoss, causalLmLossChunked, type LossReduction } from './loss.js';

const F32_BYTES = 4;

/** Positions whose float32 logits over `vocab` fit in `limitBytes` (Infinity when unbounded). */
export function logitRowsWithin(limitBytes: number, vocab: number): number {
  return Number.isFinite(limitBytes) ? Math.max(1, Math.floor(limitBytes / (F32_BYTES * vocab))) : Infinity;
}

export interface ModelLossOptions extends ForwardLogitsOptions {
  reduction?: LossReduction;
  /** Largest logits tensor in bytes (default: the active backend's largest storage binding, unbounded off webgpu). */
  maxLogitBytes?: number;
}

/** Causal LM loss of `model` on ids [B, T] with loss mask [B, T]; differentiable like forwardLogits. */
export function modelLoss(model: ModelWeights, ids: tf.Tensor2D, mask: tf.Tensor2D, options: ModelLossOptions = {}): tf.Scalar {
  const { reduction = 'mean', maxLogitBytes = maxStorageBindingBytes(), ...forward } = options;
  const chunkRows = logitRowsWithin(maxLogitBytes, model.spec.vocabSize);
  const [batch, time] = ids.shape;
  if (batch * time <= chunkRows) return causalLmLoss(forwardLogits(model, ids, forward), ids, mask, reduction);
  return tf.tidy(() => causalLmLossChunked(forwardHidden(model, ids, forward), (h) => linear(h, lmHeadOf(model)) as tf.Tensor2D, ids, mask, reduction, chunkRows));
}
