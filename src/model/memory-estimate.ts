/**
 * Memory a streaming forward pass needs, in bytes, so `--max-memory` can pick how many
 * sequences go through a layer at once (and refuse early when even one does not fit):
 * one decoder layer in float32, the activations of one chunk of sequences, the hidden states of
 * all sequences between layers, the embedding rows, and one lm_head row block with its logits.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { globalTensors, layerTensors } from './architecture.js';
import type { ModelSpec } from './model-spec.js';

const F32 = 4;
/** tfjs keeps at most a few float32 temporaries of the score tensor alive at once (scores, masked, exp, probs). */
const SCORE_COPIES = 4;
const LM_HEAD_BLOCK_BYTES = 128 * 1024 * 1024;

export interface ForwardMemoryOptions {
  /** All sequences of the run (their hidden states are kept between layers); default = batch. */
  totalSequences?: number;
  /** Rows of lm_head processed at once. */
  vocabBlockRows?: number;
}

export interface ForwardMemoryEstimate {
  /** One decoder layer's weights in float32, plus one tensor being decoded. */
  layerBytes: number;
  /** Activations of one chunk of `batch` sequences inside a layer. */
  activationBytes: number;
  /** Hidden states of all sequences between layers (and their normalised copy at the end). */
  hiddenStateBytes: number;
  /** Embedding rows of the tokens (or the whole table when it is small). */
  embeddingBytes: number;
  /** One lm_head row block and its logits for one chunk. */
  lmHeadBytes: number;
  totalBytes: number;
}

export function estimateForwardMemory(spec: ModelSpec, batch: number, seqLen: number, options: ForwardMemoryOptions = {}): ForwardMemoryEstimate {
  const total = options.totalSequences ?? batch;
  const D = spec.hiddenSize;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  const tokens = batch * seqLen;
  let layerParams = 0;
  let largest = 0;
  for (const t of layerTensors(spec, 0)) {
    const n = t.dims.reduce((p, d) => p * d, 1);
    layerParams += n;
    largest = Math.max(largest, n);
  }
  const layerBytes = F32 * (layerParams + 2 * largest);
  // Residual, two norms, attention output, o_proj output, transposes around each matMul (≈ 8·D),
  // q (+ rotary temporaries), k/v (+ rotary, cache), gate/up/silu/product/down input (≈ 6·I).
  const perToken = 8 * D + 4 * qDim + 6 * kvDim + 6 * I;
  const activationBytes = F32 * (tokens * perToken + SCORE_COPIES * batch * spec.numHeads * seqLen * seqLen);
  const hiddenStateBytes = F32 * 2 * total * seqLen * D;
  const embedding = globalTensors(spec).find((g) => g.role === 'embed_tokens')!;
  const tableBytes = F32 * embedding.dims[0]! * D;
  const embeddingBytes = Math.min(tableBytes, F32 * total * seqLen * D) + (tableBytes <= 64 * 1024 * 1024 ? tableBytes : 0);
  const rows = Math.min(options.vocabBlockRows ?? spec.vocabSize, spec.vocabSize);
  // block weights, its logits [rows, tokens] and the exp temporary, the transposed hidden.
  const lmHeadBytes = F32 * (rows * D + 2 * rows * tokens + tokens * D);
  return {
    layerBytes,
    activationBytes,
    hiddenStateBytes,
    embeddingBytes,
    lmHeadBytes,
    totalBytes: layerBytes + activationBytes + hiddenStateBytes + embeddingBytes + lmHeadBytes,
  };
}

export interface ForwardPlan {
  /** Sequences per chunk. */
  chunkSequences: number;
  vocabBlockRows: number;
  estimate: ForwardMemoryEstimate;
}

/**
 * The largest chunk (≤ maxChunk) and lm_head block that fit `budget` bytes; a ResourceLimitError
 * saying what is needed when not even one sequence with a small vocabulary block fits.
 */
export function planForward(spec: ModelSpec, totalSequences: number, seqLen: number, budget: number, maxChunk = totalSequences): ForwardPlan {
  const minRows = Math.min(spec.vocabSize, 1024);
  const fits = (b: number, rows: number) => estimateForwardMemory(spec, b, seqLen, { totalSequences, vocabBlockRows: rows });
  const smallest = fits(1, minRows);
  if (smallest.totalBytes > budget) {
    throw new ResourceLimitError(
      `a forward pass of one ${seqLen}-token sequence needs about ${formatBytes(smallest.totalBytes)} (one layer ${formatBytes(smallest.layerBytes)}, ` +
      `activations ${formatBytes(smallest.activationBytes)}, hidden states ${formatBytes(smallest.hiddenStateBytes)}), more than the ${formatBytes(budget)} allowed; raise --max-memory or use shorter/fewer sequences`,
      'MEMORY_BUDGET',
    );
  }
  // The estimate grows with the chunk size: binary search for the largest chunk that fits.
  let lo = 1;
  let hi = Math.max(1, maxChunk);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid, minRows).totalBytes <= budget) lo = mid;
    else hi = mid - 1;
  }
  const chunk = lo;
  // Larger lm_head blocks than LM_HEAD_BLOCK_BYTES (weights + logits) make the matMul no
  // faster, only the peak memory higher.
  const tokens = chunk * seqLen;
  const cap = Math.max(minRows, Math.floor(LM_HEAD_BLOCK_BYTES / (F32 * (spec.hiddenSize + tokens))));
  let rows = minRows;
  while (rows < Math.min(spec.vocabSize, cap)) {
    const next = Math.min(spec.vocabSize, cap, rows * 2);
    if (fits(chunk, next).totalBytes > budget) break;
    rows = next;
  }
  return { chunkSequences: chunk, vocabBlockRows: rows, estimate: fits(chunk, rows) };
}
