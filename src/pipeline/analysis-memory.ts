/**
 * Memory an analysis needs, estimated before it starts (printed, and checked against
 * `--max-memory`): the streaming forward's plan (one layer, one chunk's activations, the hidden
 * states of all sequences, an lm_head block; model/memory-estimate.ts) plus what the analysis
 * keeps itself: the per-micro-batch sums of squares of the current layer, the recorder, the
 * per-sequence statistics of `--dump-stats`, and the matrices of `--erank`.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { planForward, type ForwardPlan } from '../model/memory-estimate.js';
import type { ModelSpec } from '../model/model-spec.js';
import { microBatchCount } from './activation-stats.js';
import { erankMemoryBytes } from './analysis-erank.js';

export interface AnalysisMemoryInput {
  readonly sequences: number;
  /** Longest sequence (after removing padding). */
  readonly seqLen: number;
  readonly batchSize: number;
  /** Budget the forward plan must fit (its chunk size follows from it). */
  readonly budgetBytes: number;
  /** Tensor memory the backend allows (wasm-heap-limit.ts tfHeapAllowance); default unlimited. */
  readonly tfHeapLimitBytes?: number;
  /** The largest tensor the backend can bind (webgpu's maxStorageBufferBindingSize; unbounded elsewhere). */
  readonly maxTensorBytes?: number;
  readonly dumpStats: boolean;
  readonly erank: boolean;
  readonly base: boolean;
}

export interface AnalysisMemoryEstimate {
  readonly forward: ForwardPlan;
  /** Micro-batch sums, recorder and score records. */
  readonly statisticsBytes: number;
  readonly dumpBytes: number;
  readonly erankBytes: number;
  readonly totalBytes: number;
}

export function estimateAnalysisMemory(spec: ModelSpec, input: AnalysisMemoryInput): AnalysisMemoryEstimate {
  const forward = planForward(spec, input.sequences, input.seqLen, input.budgetBytes, Math.min(input.batchSize, input.sequences), input.tfHeapLimitBytes, input.maxTensorBytes);
  const { numLayers: L, numHeads: H, numKvHeads: G, intermediateSize: I } = spec;
  const micro = microBatchCount(input.sequences, input.batchSize);
  // Float64 micro-batch sums; recorder counts (int32) and norm sums (float64); float32 records.
  const statisticsBytes = micro * (H + I) * 8 + L * (G * 12 + H * 8 + I * 12) + L * (2 * G + H + 2 * I) * 4;
  const dumpBytes = input.dumpStats ? L * input.sequences * (H + I) * 4 : 0;
  const erankBytes = input.erank ? erankMemoryBytes(spec, input.base) : 0;
  return { forward, statisticsBytes, dumpBytes, erankBytes, totalBytes: forward.estimate.totalBytes + statisticsBytes + dumpBytes + erankBytes };
}

/** One line for the terminal: total and its parts. */
export function describeMemoryEstimate(e: AnalysisMemoryEstimate): string {
  const f = e.forward.estimate;
  const parts = [
    `one layer ${formatBytes(f.layerBytes)}`,
    `activations ${formatBytes(f.activationBytes)} (${e.forward.chunkSequences} sequence${e.forward.chunkSequences === 1 ? "" : "s"} at once)`,
    `hidden states ${formatBytes(f.hiddenStateBytes)}`,
    `embeddings ${formatBytes(f.embeddingBytes)}`,
    `lm_head block ${formatBytes(f.lmHeadBytes)}`,
    `statistics ${formatBytes(e.statisticsBytes)}`,
    ...(e.dumpBytes > 0 ? [`--dump-stats ${formatBytes(e.dumpBytes)}`] : []),
    ...(e.erankBytes > 0 ? [`--erank ${formatBytes(e.erankBytes)}`] : []),
  ];
  return `memory estimate ${formatBytes(e.totalBytes)}: ${parts.join(', ')}`;
}

/** Refuses to start when the estimate exceeds `--max-memory` (exit 5). */
export function checkMemoryLimit(e: AnalysisMemoryEstimate, maxBytes: number | undefined): void {
  if (maxBytes !== undefined && e.totalBytes > maxBytes) {
    throw new ResourceLimitError(`${describeMemoryEstimate(e)}; that is more than --max-memory ${formatBytes(maxBytes)}. Raise --max-memory, or use fewer/shorter sequences or a smaller --batch-size`, 'MEMORY_BUDGET');
  }
}
