/**
 * Memory a training stage needs, in bytes, estimated before the model is loaded so that
 * `--max-memory` can refuse a run that would not fit (exit 5). Training keeps the whole model
 * in memory in float32, and tfjs keeps, until the backward pass ends, every tensor saved for it
 * and the gradient of every intermediate on the tape (engine.gradients disposes them only at its
 * end), so unlike the streaming forward this grows with depth. Counted from the wasm backend's
 * live allocations at the peak (the end of a micro-batch's backward pass), measured by wrapping
 * its `_malloc`/`_free` and grouping the live blocks by size (docs/reliability.md):
 *
 *   weights      4 · all model parameters (tf tensors)
 *   optimizer    4 · 2 per entry of every trainable tensor, counted whole (the gradient and its
 *                accumulated sum have the tensor's shape even when a few rows or columns train),
 *                and 4 · 4 per entry that trains (the gradient as the update reads it, its clipped
 *                copy, AdamW's two moments: of the trained rows/columns only, adamw.ts `lines`;
 *                until 2026-11-28 these too were whole-tensor, so 6 per entry of every trainable
 *                tensor); plus two temporaries of the largest trainable tensor inside the update
 *   activations  per layer and token, in floats: 39·D + 20·q + 19·kv + 15·I + 12 (the saved
 *                intermediates and their gradients, about twice the forward's 18·D + 11·q +
 *                11·kv + 8·I) and 7 · H·T for the attention scores (3 saved, 4 gradients); per
 *                token outside the layers 12·D (embedding rows, final norm, their gradients)
 *   operators    APEX: per layer 5.25 · D·(kv + q + 3·I) floats: the operator-mixed weights of
 *                v, o, gate, up and down (the transformed copy, its gradient and the gradient
 *                of the original weight: 3 copies) and the [n, in] line blocks of the five sites
 *                (about 12 per site at the default n = 3/16 of the lines); independent of tokens
 *   LoRA         5 copies of the projection weights (B·A, its scaled copy, W + s·B·A and the
 *                gradients of the last two). With gradient accumulation the transforms are made
 *                once per step and kept (prepared-transforms.ts); the micro-batches then hold
 *                fewer of these copies at their peak, and the terms above still cover it: at
 *                4 micro-batches of 2 × 128 on the 10M benchmark model, peak RSS fell from 1104
 *                to 1050 MiB (APEX full) and from 809 to 728 MiB (LoRA) against one micro-batch
 *                With activation recomputation (--recompute-activations, recomputed-layer.ts) the
 *                tape keeps of each layer only its input, and the gradient of each layer's output
 *                stays until the backward pass ends (2·D per layer and token); one layer's
 *                intermediates and their gradients are alive at a time, while it is recomputed
 *                and differentiated (the per-layer term above, once). Measured with tfjs's tensor
 *                byte count on cpu (test/train/recompute-memory.test.ts)
 *   logits       6 · B·T·V floats (logits, the loss's flat copy, one-hot, softmax, gradient)
 *   evaluation   the held-out evaluations run between steps (and before the first) at their own
 *                batch (--eval-batch-size) and sequence length (a held-out set given apart can be
 *                longer than the training sequences): forward only, no tape, with the weights, the optimizer
 *                state and the operator/LoRA terms above still resident (counted whole, on the safe
 *                side: AdamW's moments and the step's gradients as the update read them, alive until
 *                after the evaluation in trainer.ts, are 3 of its copies). Their forward runs in one tf.tidy
 *                (model-weights.ts forwardHidden), so every layer's intermediates are alive at its
 *                end: per token L · (18·D + 11·q + 11·kv + 8·I + 4·H·T) + 2·D floats (the streaming
 *                forward's per-layer term, memory-estimate.ts, times the depth); those are freed
 *                before the logits and the loss, 5·V + D per token, so the larger of the two phases
 *                is the peak. Measured by wrapping the wasm backend's _malloc/_free around one
 *                evaluation: within 1% on stories260K, llama-mha-f32 and the 10M model, and
 *                5.0·V on a 1-layer 32K-vocabulary shape. With activation recomputation each layer
 *                runs as a custom op whose intermediates are freed as it ends: L · D + one layer's
 *                term + 2·D per token. The stage's peak is the larger of the
 *                training and evaluation peaks (`sizedBy` names which); an evaluation batch up to
 *                the training batch never sets it
 *   heap         the wasm heap's high-water mark is 1.13–1.20 × the live bytes above (memory
 *                grows in 20% steps, large blocks that do not fit a hole go on top): 15% more
 *   saved state  outside the heap: 2 of the largest trainable tensor, what a checkpoint or
 *                trained.safetensors holds at a time (their writers ask for each tensor, and each
 *                AdamW moment, when they reach it: AdamW.moments, stage-outputs.ts). Until
 *                2026-11-28 a checkpoint downloaded every moment first and the end of the stage
 *                every trained tensor: 4 floats per trainable entry, 150–177 MB more peak RSS on
 *                the 10m model trained whole. LoRA adds 2
 *                copies of the projection weights at the end of the stage, where the merged
 *                projections are read out for trained.safetensors (measured on a 15.6M model at
 *                1 × 128 tokens: the peak rose by 2.3 copies there, after training; without this
 *                term the LoRA estimate was 0.81–0.94 of the use at batch 1–8)
 *   command      what the command holds beyond the process baseline (tokenizer, data, checkpoint
 *                index, oclif), as in the forward's estimate: COMMAND_BYTES (memory-estimate.ts).
 *                It matters where the rest is small: with activation recomputation at 1 × 512
 *                tokens on stories260K the estimate without it was 0.68–0.74 of the use
 *
 * On the benchmarks of docs/reliability.md the live-bytes part is within 5% of the measured
 * live allocations and the total within 0.90–1.06 of peak RSS minus the process baseline.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { COMMAND_BYTES } from '../model/memory-estimate.js';
import type { ModelSpec } from '../model/model-spec.js';
import { modelParamCount } from './trainable-params.js';
import { fewerTensorsAdvice, type TrainingChoice } from '../model/memory-advice.js';

const F32 = 4;

export interface TrainingMemoryInput {
  /** Micro-batch size and sequence length. */
  readonly batch: number;
  /** Sequences per batch of the held-out evaluations between steps (default: batch). */
  readonly evalBatch?: number;
  readonly seqLen: number;
  /**
   * Sequence length of the held-out evaluations (default: seqLen); it differs when the held-out
   * set is given apart (another token-id file, or text next to narrower training ids).
   */
  readonly evalSeqLen?: number;
  /** Entries of all trainable tensors, whole shapes (model tensors, operators, adapters). */
  readonly trainableEntries: number;
  /**
   * Entries that train: trainableEntries less the frozen rows/columns of matrices that train in
   * part (`structured`; a bias that trains on some rows keeps whole-vector state and counts
   * whole, stage-trainables.ts optimizerEntryCount). Default: trainableEntries.
   */
  readonly trainedEntries?: number;
  /** Entries of the largest trainable tensor. */
  readonly largestTrainable: number;
  /** Whether the APEX operator hooks run in the forward. */
  readonly operators: boolean;
  /** Whether LoRA adapters are merged into the projections in the forward. */
  readonly lora: boolean;
  /** Whether each decoder layer's activations are recomputed in the backward pass (default false). */
  readonly recompute?: boolean;
}

export interface TrainingMemoryEstimate {
  readonly weightBytes: number;
  readonly optimizerBytes: number;
  /**
   * Activations and logits alive at the peak: the training micro-batch's (saved for the backward
   * pass, with their gradients), or, when the held-out evaluation sets the peak (`sizedBy`), its
   * forward's (all layers' intermediates, or its logits and loss when those are larger).
   */
  readonly activationBytes: number;
  readonly logitBytes: number;
  /**
   * Tensor memory at its high-water mark: the four terms above with 15% allocation slack (the
   * growth measured of the wasm heap, which the wasm heap limit applies to; the same slack is
   * added on every backend).
   */
  readonly tfHeapBytes: number;
  /** JavaScript-side copies of the trainable state while a checkpoint is written. */
  readonly savedStateBytes: number;
  /** What the command holds beyond the process baseline (COMMAND_BYTES, memory-estimate.ts). */
  readonly commandBytes: number;
  readonly totalBytes: number;
  /** What the activations and logits are sized by: the training micro-batch, or a larger held-out evaluation batch (more sequences, or longer ones). */
  readonly sizedBy: 'training' | 'evaluation';
  /** Whether the training activations are those of activation recomputation. */
  readonly recompute: boolean;
  /** totalBytes and tfHeapBytes with activation recomputation (equal to them when it is on). */
  readonly totalBytesWithRecompute: number;
  readonly tfHeapBytesWithRecompute: number;
}

/** The wasm heap's high-water mark over the live bytes, measured 1.13–1.20. */
const HEAP_GROWTH = 1.15;

export function estimateTrainingMemory(spec: ModelSpec, input: TrainingMemoryInput): TrainingMemoryEstimate {
  const D = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  const L = spec.numLayers;
  const T = input.seqLen;
  const V = spec.vocabSize;
  const perLayerToken = 39 * D + 20 * q + 19 * kv + 15 * I + 12 + 7 * spec.numHeads * T;
  const projections = L * (2 * D * q + 2 * D * kv + 3 * D * I);
  const mixedSites = L * D * (kv + q + 3 * I);
  const weightBytes = F32 * modelParamCount(spec);
  const optimizerBytes = F32 * (2 * input.trainableEntries + 4 * (input.trainedEntries ?? input.trainableEntries) + 2 * input.largestTrainable);
  const hookBytes = F32 * ((input.operators ? 5.25 * mixedSites : 0) + (input.lora ? 5 * projections : 0));
  const trainTokens = input.batch * T;
  // Recomputed: every layer's input and the gradient of its output, and one layer's intermediates.
  const layerActivations = (recompute: boolean) => (recompute ? 2 * L * D + perLayerToken : L * perLayerToken);
  const trainingWith = (recompute: boolean) => ({
    activationBytes: F32 * trainTokens * (layerActivations(recompute) + 12 * D) + hookBytes,
    logitBytes: F32 * 6 * trainTokens * V,
  });
  const recompute = input.recompute ?? false;
  // The evaluation's peak is the end of its layers or its logits phase, whichever is larger; each
  // phase's tensors are freed before the other's are made, so only one is counted.
  const evalT = input.evalSeqLen ?? T;
  const evalTokens = (input.evalBatch ?? input.batch) * evalT;
  const evalLayer = 18 * D + 11 * q + 11 * kv + 8 * I + 4 * spec.numHeads * evalT;
  // Recomputing, the evaluation runs each layer as a custom op too, whose intermediates are freed as it ends.
  const layersPerTokenWith = (recompute: boolean) => (recompute ? L * D + evalLayer : L * evalLayer) + 2 * D;
  const logitsPerToken = 5 * V + D;
  const evaluationWith = (recompute: boolean) => {
    const layersPerToken = layersPerTokenWith(recompute);
    return layersPerToken >= logitsPerToken
      ? { activationBytes: F32 * evalTokens * layersPerToken + hookBytes, logitBytes: 0 }
      : { activationBytes: F32 * evalTokens * D + hookBytes, logitBytes: F32 * evalTokens * 5 * V };
  };
  const savedStateBytes = F32 * (2 * input.largestTrainable + (input.lora ? 2 * projections : 0));
  const peak = (recompute: boolean) => {
    const training = trainingWith(recompute);
    const evaluation = evaluationWith(recompute);
    const sizedBy: 'training' | 'evaluation' = evaluation.activationBytes + evaluation.logitBytes > training.activationBytes + training.logitBytes ? 'evaluation' : 'training';
    const { activationBytes, logitBytes } = sizedBy === 'evaluation' ? evaluation : training;
    const tfHeapBytes = Math.round(HEAP_GROWTH * (weightBytes + optimizerBytes + activationBytes + logitBytes));
    return { activationBytes, logitBytes, tfHeapBytes, totalBytes: tfHeapBytes + savedStateBytes + COMMAND_BYTES, sizedBy };
  };
  const { activationBytes, logitBytes, tfHeapBytes, totalBytes, sizedBy } = peak(recompute);
  const withRecompute = recompute ? { totalBytes, tfHeapBytes } : peak(true);
  return {
    weightBytes, optimizerBytes, activationBytes, logitBytes, tfHeapBytes, savedStateBytes, commandBytes: COMMAND_BYTES, totalBytes, sizedBy,
    recompute, totalBytesWithRecompute: withRecompute.totalBytes, tfHeapBytesWithRecompute: withRecompute.tfHeapBytes,
  };
}

/**
 * Bytes that no micro-batch size or sequence length changes: the weights and the gradients and
 * optimizer state with their allocation slack, the copies made while saving and the command's own.
 */
export function fixedTrainingBytes(estimate: TrainingMemoryEstimate): number {
  return Math.round(HEAP_GROWTH * (estimate.weightBytes + estimate.optimizerBytes)) + estimate.savedStateBytes + estimate.commandBytes;
}

/** What to tell the user to change, in the words of the command line (default) or of a run config. */
export const CLI_MEMORY_ADVICE = 'raise --max-memory, or lower --batch-size / --seq-len (use --grad-accum to keep the batch)';
export const CONFIG_MEMORY_ADVICE = 'raise max_memory, or lower optimizer.batch_size / data.seq_len (use optimizer.grad_accum to keep the batch)';
/** Throws ResourceLimitError (exit 5) when the estimate is over the budget. */
export function checkTrainingMemory(estimate: TrainingMemoryEstimate, budgetBytes: number, what: string, advice = CLI_MEMORY_ADVICE, training?: TrainingChoice): void {
  if (estimate.totalBytes <= budgetBytes) return;
  const fixed = fixedTrainingBytes(estimate);
  const form = advice === CONFIG_MEMORY_ADVICE ? 'config' : 'cli';
  // When the frozen weights alone (with the command's own, which any stage needs) are over the
  // budget, training fewer tensors cannot help either.
  const fewer = estimate.weightBytes * HEAP_GROWTH + estimate.commandBytes < budgetBytes ? fewerTensorsAdvice(training, form) : undefined;
  const raise = form === 'config' ? 'raise max_memory' : 'raise --max-memory';
  const remedy =
    fixed > budgetBytes
      ? `the weights, gradients and optimizer state alone (with their slack, the copies while saving and the command itself) need about ${formatBytes(fixed)}, ` +
        `which a smaller batch or sequence length does not change: ${raise}${fewer ? `, or ${fewer}` : ''}`
      : `${!estimate.recompute && estimate.totalBytesWithRecompute <= budgetBytes ? `${recomputeAdvice(form, estimate)}; or ` : ''}${
          estimate.sizedBy === 'evaluation'
            ? `the held-out evaluation (its batch or its sequences larger than training's) sets this peak: ${raise}, or lower ${form === 'config' ? 'eval.batch_size' : '--eval-batch-size'} (it changes speed and memory, not the perplexity)`
            : advice
        }`;
  throw new ResourceLimitError(`${what} needs about ${formatBytes(estimate.totalBytes)} (${memoryParts(estimate)}), more than the ${formatBytes(budgetBytes)} allowed; ${remedy}`, 'MEMORY_BUDGET');
}

/** The option that makes an over-budget plan fit, when activation recomputation would. */
function recomputeAdvice(form: 'cli' | 'config', estimate: TrainingMemoryEstimate): string {
  const option = form === 'config' ? 'set optimizer.recompute_activations: true' : 'add --recompute-activations';
  return `${option} (about ${formatBytes(estimate.totalBytesWithRecompute)}: each layer's activations are recomputed in the backward pass, about a third more time per step, the same results)`;
}

/** The estimate's parts in words, as refusals and dry runs print them. */
export function memoryParts(estimate: TrainingMemoryEstimate): string {
  const slack = estimate.tfHeapBytes - estimate.weightBytes - estimate.optimizerBytes - estimate.activationBytes - estimate.logitBytes;
  return (
    `weights ${formatBytes(estimate.weightBytes)}, gradients and optimizer state ${formatBytes(estimate.optimizerBytes)}, ` +
    `${estimate.sizedBy === 'evaluation' ? 'held-out evaluation ' : ''}activations ${formatBytes(estimate.activationBytes)}${estimate.recompute && estimate.sizedBy === 'training' ? ' (recomputed: the layer inputs and one layer\'s)' : ''}, logits ${formatBytes(estimate.logitBytes)}, ` +
    `allocation slack ${formatBytes(slack)}, copies while saving ${formatBytes(estimate.savedStateBytes)}, the command itself ${formatBytes(estimate.commandBytes)}`
  );
}
