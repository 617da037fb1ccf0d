/**
 * Held-out perplexity of a checkpoint folder, as `apex run` reports it before training, after
 * every stage and for the baseline: the streaming forward over the run's evaluation sequences,
 * all in one pass, so every model of a run is measured on exactly the same tokens.
 */
import { VerificationError } from '../errors.js';
import { Checkpoint } from '../io/checkpoint.js';
import { evaluateNll } from '../model/streaming-forward.js';
import { CheckpointWeightSource, describeCheckpoint } from '../model/weight-source.js';
import type { SequenceSet } from '../train/data.js';

export interface HeldOutEval {
  /** Mean next-token NLL in nats. */
  readonly meanNll: number;
  readonly perplexity: number;
  /** Prediction targets counted. */
  readonly tokens: number;
  readonly sequences: number;
  /**
   * Sequences per batch it ran with: eval.batch_size at the time, which may change between a
   * run's invocations. Absent in records of apex versions before it was recorded.
   */
  readonly batchSize?: number;
}

export interface EvalCheckpointOptions {
  readonly batchSize: number;
  readonly maxMemoryBytes?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (text: string) => void;
}

export async function evaluateCheckpoint(dir: string, data: SequenceSet, options: EvalCheckpointOptions): Promise<HeldOutEval> {
  const checkpoint = await Checkpoint.open(dir);
  try {
    const { spec } = describeCheckpoint(checkpoint);
    const result = await evaluateNll(new CheckpointWeightSource(checkpoint, spec), data.sequences, {
      batchSize: options.batchSize,
      ...(data.lossMasks ? { lossMasks: data.lossMasks } : {}),
      ...(options.maxMemoryBytes !== undefined ? { maxMemoryBytes: options.maxMemoryBytes } : {}),
      budgetName: 'max_memory', // only apex run evaluates through here
      ...(options.signal ? { signal: options.signal } : {}),
      onProgress: (e) => options.onProgress?.(e.stage === 'layer' ? `layer ${e.done}/${e.total}` : `lm_head block ${e.done}/${e.total}`),
    });
    if (!Number.isFinite(result.meanNll)) {
      throw new VerificationError(`${dir}: the held-out mean NLL is ${result.meanNll}: a weight holds NaN/Inf or the forward pass overflows (a diverged stage?)`, 'NON_FINITE_LOSS');
    }
    return { meanNll: result.meanNll, perplexity: result.perplexity, tokens: result.tokens, sequences: data.sequences.length, batchSize: options.batchSize };
  } finally {
    await checkpoint.close();
  }
}
