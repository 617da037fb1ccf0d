/**
 * Memory a training stage needs, in bytes, estimated before the model is loaded so that
 * `--max-memory` can refuse a run that would not fit (exit 5). Training keeps the whole model
 * in memory in float32 and tfjs's gradient tape keeps the intermediates of the forward pass
 * until the backward pass, so unlike the streaming forward this grows with depth.
 *
 *   weights      4 · all model parameters, plus as much again for the decoded copies the
 *                checkpoint reader hands over while loading
 *   optimizer    4 · 6 per trainable entry (the gradient, its accumulated sum, the masked and
 *                clipped copies, AdamW's two moments), counted over whole tensors because
 *                moments and gradients have the tensor's shape even when a mask trains a few
 *                rows; plus two temporaries of the largest trainable tensor inside the update
 *   activations  per layer and token, in floats: 3.75 · (10·D + 6·q + 8·kv + 7·I) for the
 *                projections, norms, rotary copies, transposes and SwiGLU terms, 14.5 · H·T for
 *                the attention scores and their softmax/gradient copies; with APEX operators
 *                24 · (kv + 2·I) more (the gathers and concatenations that mix v, gate and up
 *                and their gradients); with LoRA 9 copies of the projection weights (the merged
 *                W + s·B·A of every projection and its gradient)
 *   logits       5 · B·T·V floats (logits, the loss's flat copy, one-hot, softmax, gradient)
 *
 * The coefficients are fitted to the wasm heap's high-water mark of the benchmark model and
 * checked against measured peak RSS minus the process's baseline on the three model shapes of
 * docs/benchmarks.md ("Training"), where the estimate falls within −20 % / +10 %.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import type { ModelSpec } from '../model/model-spec.js';
import { modelParamCount } from './trainable-params.js';

const F32 = 4;

export interface TrainingMemoryInput {
  /** Micro-batch size and sequence length. */
  readonly batch: number;
  readonly seqLen: number;
  /** Entries of all trainable tensors, whole shapes (model tensors, operators, adapters). */
  readonly trainableEntries: number;
  /** Entries of the largest trainable tensor. */
  readonly largestTrainable: number;
  /** Whether the APEX operator hooks run in the forward. */
  readonly operators: boolean;
  /** Whether LoRA adapters are merged into the projections in the forward. */
  readonly lora: boolean;
}

export interface TrainingMemoryEstimate {
  readonly weightBytes: number;
  readonly optimizerBytes: number;
  readonly activationBytes: number;
  readonly logitBytes: number;
  readonly totalBytes: number;
}

export function estimateTrainingMemory(spec: ModelSpec, input: TrainingMemoryInput): TrainingMemoryEstimate {
  const D = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  const tokens = input.batch * input.seqLen;
  const perToken = 3.75 * (10 * D + 6 * q + 8 * kv + 7 * I) + 14.5 * spec.numHeads * input.seqLen + (input.operators ? 24 * (kv + 2 * I) : 0);
  const projections = spec.numLayers * (2 * D * q + 2 * D * kv + 3 * D * I);
  const weightBytes = 2 * F32 * modelParamCount(spec);
  const optimizerBytes = F32 * (6 * input.trainableEntries + 2 * input.largestTrainable);
  const activationBytes = F32 * (tokens * spec.numLayers * perToken + (input.lora ? 9 * projections : 0));
  const logitBytes = F32 * 5 * tokens * spec.vocabSize;
  return { weightBytes, optimizerBytes, activationBytes, logitBytes, totalBytes: weightBytes + optimizerBytes + activationBytes + logitBytes };
}

/** Throws ResourceLimitError (exit 5) when the estimate is over the budget. */
export function checkTrainingMemory(estimate: TrainingMemoryEstimate, budgetBytes: number, what: string): void {
  if (estimate.totalBytes <= budgetBytes) return;
  throw new ResourceLimitError(
    `${what} needs about ${formatBytes(estimate.totalBytes)} (weights ${formatBytes(estimate.weightBytes)}, gradients and optimizer state ${formatBytes(estimate.optimizerBytes)}, ` +
      `activations ${formatBytes(estimate.activationBytes)}, logits ${formatBytes(estimate.logitBytes)}), more than the ${formatBytes(budgetBytes)} allowed; ` +
      'raise --max-memory, or lower --batch-size / --seq-len (use --grad-accum to keep the batch)',
    'MEMORY_BUDGET',
  );
}
