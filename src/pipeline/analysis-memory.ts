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
import { DEFAULT_MAX_MEMORY_BYTES } from '../model/streaming-forward.js';
import { tfHeapAllowance } from '../model/wasm-heap-limit.js';
import { maxStorageBindingBytes } from '../ops/webgpu-programs.js';
import { microBatchCount } from './activation-stats.js';
import { erankMemoryBytes } from './analysis-erank.js';

export interface AnalysisMemoryInput {
  readonly sequences: number;
  /** Longest sequence (after removing padding). */
  readonly seqLen: number;
  readonly batchSize: number;
  /** Budget the forward plan must fit (its chunk size follows from it). */
  readonly budgetBytes: number;
  /** How a refusal names that budget (default `--max-memory`). */
  readonly budgetName?: string;
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
  const forward = planForward(spec, input.sequences, input.seqLen, input.budgetBytes, Math.min(input.batchSize, input.sequences), input.tfHeapLimitBytes, input.maxTensorBytes, input.budgetName);
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
    `the command itself ${formatBytes(f.commandBytes)}`,
    ...(e.dumpBytes > 0 ? [`--dump-stats ${formatBytes(e.dumpBytes)}`] : []),
    ...(e.erankBytes > 0 ? [`--erank ${formatBytes(e.erankBytes)}`] : []),
  ];
  return `memory estimate ${formatBytes(e.totalBytes)}: ${parts.join(', ')}`;
}

/** How the refusal names the settings: apex analyze's flags, or those of the stage or run config that analyses first. */
export interface AnalysisMemoryNames {
  readonly maxMemory: string;
  readonly samples: string;
  readonly batchSize: string;
}

export const ANALYZE_MEMORY_NAMES: AnalysisMemoryNames = { maxMemory: '--max-memory', samples: '--samples', batchSize: '--batch-size' };

/** Refuses to start when the estimate exceeds `--max-memory` (exit 5). */
export function checkMemoryLimit(e: AnalysisMemoryEstimate, maxBytes: number | undefined, names: AnalysisMemoryNames = ANALYZE_MEMORY_NAMES): void {
  if (maxBytes !== undefined && e.totalBytes > maxBytes) {
    throw new ResourceLimitError(`${describeMemoryEstimate(e)}; that is more than ${names.maxMemory} ${formatBytes(maxBytes)}. Raise ${names.maxMemory}, or use fewer (${names.samples}) or shorter sequences or a smaller ${names.batchSize}`, 'MEMORY_BUDGET');
  }
}

export interface AnalysisMemoryPlanInput {
  readonly batchSize: number;
  /** Bytes allowed (the forward's chunks follow from it); unset: the streaming forward's default budget. */
  readonly maxMemory?: number;
  /** The backend the analysis runs on (on wasm its chunks must also fit the heap). */
  readonly backend: string;
  readonly dumpStats?: boolean;
  readonly erank?: boolean;
  readonly base?: boolean;
  /** How a refusal names the settings (default: apex analyze's flags). */
  readonly names?: AnalysisMemoryNames;
}

/**
 * The estimate an analysis of these (unpadded) sequences makes before it starts: apex analyze,
 * and the dry runs of a stage or run that would analyse first, which must refuse what it refuses.
 */
export function planAnalysisMemory(spec: ModelSpec, sequences: readonly Int32Array[], o: AnalysisMemoryPlanInput): AnalysisMemoryEstimate {
  return estimateAnalysisMemory(spec, {
    sequences: sequences.length,
    seqLen: Math.max(...sequences.map((s) => s.length)),
    batchSize: o.batchSize,
    budgetBytes: o.maxMemory ?? DEFAULT_MAX_MEMORY_BYTES,
    tfHeapLimitBytes: tfHeapAllowance(o.backend),
    maxTensorBytes: maxStorageBindingBytes(),
    budgetName: (o.names ?? ANALYZE_MEMORY_NAMES).maxMemory,
    dumpStats: o.dumpStats ?? false,
    erank: o.erank ?? false,
    base: o.base ?? false,
  });
}
