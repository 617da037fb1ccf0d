/**
 * Memory a streaming forward pass needs, in bytes, so `--max-memory` can pick how many
 * sequences go through a layer at once (and refuse early when even one does not fit). Counted
 * from what is resident at the peak (docs/reliability.md, "Memory limit and estimates"):
 *
 *   on the tf (wasm) heap  one decoder layer in float32; every intermediate of one chunk's pass
 *                          through it (a layer runs inside one tf.tidy, so all of them are alive
 *                          at its end: per token 18·D + 11·q + 11·kv + 8·I floats, measured by
 *                          wrapping the wasm backend's malloc, plus 4 copies of the [B, H, T, T]
 *                          attention scores); one lm_head row block with its logits [tokens, rows]
 *                          and their three same-size temporaries (the transposed matMul product,
 *                          logits − max, exp). The wasm heap never shrinks and the layer's holes
 *                          are too small for the lm_head block's allocations, so the two phases
 *                          add up rather than overlap.
 *   JavaScript side        the tensor being decoded (float32 values and the raw bytes read), the
 *                          hidden states of all sequences between layers, the embedding rows.
 *   command                what a command holds beyond the process baseline before its model
 *                          work (tokenizer, corpus, checkpoint index, oclif): COMMAND_BYTES.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { globalTensors, layerTensors } from './architecture.js';
import type { ModelSpec } from './model-spec.js';
import { checkWebgpuForwardBinding, forwardChunkFits } from './webgpu-binding-limit.js';

const F32 = 4;
/** Float32 copies of the attention scores alive in a layer's tidy scope (scores, scaled, masked, probs). */
const SCORE_COPIES = 4;
/**
 * Peak RSS of `apex eval --input-ids` on 1 × 16 tokens (no model-sized work) minus the baseline
 * process (modules imported, wasm initialised): 19 MiB (stories260K) to 27 MiB (llama-mha-f32),
 * 2-core VM. A tokenizer and the built-in corpus add about 13 MiB more (not counted).
 */
export const COMMAND_BYTES = 20 * 2 ** 20;
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
  /** One lm_head row block (and its decoded copy) with its logits and their temporaries for one chunk. */
  lmHeadBytes: number;
  /** What the command holds beyond the process baseline before the forward starts. */
  commandBytes: number;
  /** The part of the total that lives on the tf heap (what counts against the wasm heap limit). */
  tfHeapBytes: number;
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
  // The layer on the tf heap, plus the tensor being decoded on the JavaScript side (float32
  // values and the raw bytes, at most as large again).
  const layerTfBytes = F32 * layerParams;
  const layerBytes = layerTfBytes + F32 * 2 * largest;
  const perToken = 18 * D + 11 * qDim + 11 * kvDim + 8 * I;
  const activationBytes = F32 * (tokens * perToken + SCORE_COPIES * batch * spec.numHeads * seqLen * seqLen);
  const hiddenStateBytes = F32 * 2 * total * seqLen * D;
  const embedding = globalTensors(spec).find((g) => g.role === 'embed_tokens')!;
  const tableBytes = F32 * embedding.dims[0]! * D;
  const embeddingBytes = Math.min(tableBytes, F32 * total * seqLen * D) + (tableBytes <= 64 * 1024 * 1024 ? tableBytes : 0);
  const rows = Math.min(options.vocabBlockRows ?? spec.vocabSize, spec.vocabSize);
  // On the tf heap: the block, the hidden states and their transpose, the logits and three
  // temporaries of their size; on the JavaScript side the block decoded (values + raw bytes).
  const lmHeadTfBytes = F32 * (rows * D + 4 * rows * tokens + 2 * tokens * D);
  const lmHeadBytes = lmHeadTfBytes + F32 * 2 * rows * D;
  const commandBytes = COMMAND_BYTES;
  return {
    layerBytes,
    activationBytes,
    hiddenStateBytes,
    embeddingBytes,
    lmHeadBytes,
    commandBytes,
    tfHeapBytes: layerTfBytes + activationBytes + lmHeadTfBytes,
    totalBytes: layerBytes + activationBytes + hiddenStateBytes + embeddingBytes + lmHeadBytes + commandBytes,
  };
}

export interface ForwardPlan {
  /** Sequences per chunk. */
  chunkSequences: number;
  vocabBlockRows: number;
  estimate: ForwardMemoryEstimate;
}

/**
 * The largest chunk (≤ maxChunk) and lm_head block whose estimate fits `budget` bytes in all and
 * `tfHeapLimit` bytes on the tf heap (the wasm backend's heap cannot grow past 4 GiB, whatever
 * --max-memory allows: wasm-heap-limit.ts tfHeapAllowance), with no tensor over `maxTensorBytes`
 * (webgpu's largest storage binding; webgpu-binding-limit.ts); a ResourceLimitError saying what
 * is needed when not even one sequence with a small vocabulary block fits.
 */
export function planForward(spec: ModelSpec, totalSequences: number, seqLen: number, budget: number, maxChunk = totalSequences, tfHeapLimit = Infinity, maxTensorBytes = Infinity, budgetName = '--max-memory'): ForwardPlan {
  if (Number.isFinite(maxTensorBytes)) checkWebgpuForwardBinding(spec, seqLen, maxTensorBytes);
  // An lm_head block's logits [tokens, rows] must also fit one binding on webgpu.
  const minRows = Math.max(1, Math.min(spec.vocabSize, 1024, Math.floor(maxTensorBytes / (F32 * seqLen))));
  const estimate = (b: number, rows: number) => estimateForwardMemory(spec, b, seqLen, { totalSequences, vocabBlockRows: rows });
  const within = (e: ForwardMemoryEstimate, b: number, rows: number) => e.totalBytes <= budget && e.tfHeapBytes <= tfHeapLimit && forwardChunkFits(spec, b, seqLen, rows, maxTensorBytes);
  const smallest = estimate(1, minRows);
  if (smallest.tfHeapBytes > tfHeapLimit) {
    throw new ResourceLimitError(
      `a forward pass of one ${seqLen}-token sequence needs about ${formatBytes(smallest.tfHeapBytes)} of tensor memory, more than the ` +
      `${formatBytes(tfHeapLimit)} the wasm backend's heap allows for an estimate; use shorter/fewer sequences or another backend (--backend webgpu, tensorflow or cpu)`,
      'MEMORY_WASM_HEAP',
    );
  }
  if (smallest.totalBytes > budget) {
    throw new ResourceLimitError(
      `a forward pass of one ${seqLen}-token sequence needs about ${formatBytes(smallest.totalBytes)} (one layer ${formatBytes(smallest.layerBytes)}, ` +
      `activations ${formatBytes(smallest.activationBytes)}, hidden states ${formatBytes(smallest.hiddenStateBytes)}, embedding rows ${formatBytes(smallest.embeddingBytes)}, ` +
      `an lm_head block with its logits ${formatBytes(smallest.lmHeadBytes)}, the command itself ${formatBytes(smallest.commandBytes)}), more than the ${formatBytes(budget)} allowed; raise ${budgetName} or use shorter/fewer sequences`,
      'MEMORY_BUDGET',
    );
  }
  // The estimate grows with the chunk size: binary search for the largest chunk that fits.
  let lo = 1;
  let hi = Math.max(1, maxChunk);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (within(estimate(mid, minRows), mid, minRows)) lo = mid;
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
    if (!within(estimate(chunk, next), chunk, next)) break;
    rows = next;
  }
  return { chunkSequences: chunk, vocabBlockRows: rows, estimate: estimate(chunk, rows) };
}
