/**
 * Layer-streaming inference: every decoder layer is loaded once, all sequences go through it
 * (in chunks that fit the memory budget), and it is freed before the next one, so peak memory
 * is about one layer plus activations whatever the depth. lm_head is applied in vocab row
 * blocks with a streaming log-softmax, so the full [N, V] logits never exist for the NLL.
 * Observers see every layer's activations, chunk by chunk.
 *
 * Every value read back from the backend is read asynchronously, after the tidy scope that
 * computed it: the webgpu backend under Node cannot read synchronously (tensor-read.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { InputError, ResourceLimitError, UsageError } from '../errors.js';
import { maxStorageBindingBytes } from '../ops/webgpu-programs.js';
import { decoderLayer } from './decoder-layer.js';
import type { LayerActivations, LayerHooks } from './layer-hooks.js';
import { linear, rmsNorm } from './layer-math.js';
import { planForward, type ForwardPlan } from './memory-estimate.js';
import type { ModelSpec } from './model-spec.js';
import { ropeInverseFrequencies, ropeTensors, type RopeTensors } from './rope.js';
import { StreamingLogSoftmax } from './streaming-log-softmax.js';
import { readFloat32 } from './tensor-read.js';
import { tfHeapAllowance } from './wasm-heap-limit.js';
import type { WeightSource } from './weight-source.js';
import { yieldForSignals } from '../util/yield-for-signals.js';

export const DEFAULT_MAX_MEMORY_BYTES = 4 * 1024 ** 3;
/** Largest logits array computeLogits hands back. */
const MAX_LOGITS_BYTES = 1024 ** 3;

/** What an observer of the streaming forward sees: a layer's activations for a chunk of sequences. */
export interface StreamedLayerActivations extends LayerActivations {
  /** Which input sequences the rows of this chunk are (row r = sequence sequenceIndices[r]). */
  readonly sequenceIndices: readonly number[];
}

/**
 * Small tensors computed inside a tidy scope (the forward keeps them past it) and what to do
 * with their values: `consume` receives them, in the order of `tensors`, once they have been
 * read back; the tensors are disposed afterwards (also when the forward fails).
 */
export interface DeferredRead {
  readonly tensors: readonly tf.Tensor[];
  consume(values: Float32Array[]): void;
}

export interface StreamingOptions {
  /** Upper bound on sequences per chunk (default: as many as the budget allows). */
  batchSize?: number;
  /** Memory budget in bytes (default 4 GiB); on wasm the tf-heap part is also kept within its heap. */
  maxMemoryBytes?: number;
  /** How a refusal names that budget (default `--max-memory`; apex run says `max_memory`). */
  budgetName?: string;
  /** Operator or LoRA hooks per layer. */
  hooks?: (layer: number) => LayerHooks | undefined;
  /**
   * Called inside the forward's tidy scope. To get values out, return a DeferredRead of the
   * reduced tensors: they are read after the chunk's layer has run, before the next chunk.
   */
  observe?: (activations: StreamedLayerActivations) => DeferredRead | void;
  signal?: AbortSignal;
  onProgress?: (event: { stage: 'layer' | 'lm_head'; done: number; total: number }) => void;
}

export interface NllOptions extends StreamingOptions {
  /** Per sequence, mask[t] = 1 when token t counts as a prediction target (t ≥ 1). Default: all. */
  lossMasks?: readonly (ArrayLike<number> | undefined)[];
  /** Also return log p(token t | tokens < t) for every sequence. */
  returnTargetLogprobs?: boolean;
  /** The data's files, named by an error about its token ids. */
  dataName?: string;
}

export interface NllResult {
  /** Mean next-token NLL (nats) over all counted targets. */
  meanNll: number;
  perplexity: number;
  /** Number of counted targets. */
  tokens: number;
  perSequence: { meanNll: number; tokens: number }[];
  /** Per sequence, length T − 1: log p(ids[t+1] | ids[≤t]); NaN where the mask excludes it. */
  targetLogprobs?: Float32Array[];
  plan: ForwardPlan;
}

interface Chunk {
  readonly indices: number[];
  readonly seqLen: number;
}

/** Mean next-token NLL over all sequences, streaming layers and the vocabulary. */
export async function evaluateNll(source: WeightSource, sequences: readonly ArrayLike<number>[], options: NllOptions = {}): Promise<NllResult> {
  const { spec } = source;
  checkTokens(spec, sequences, options.dataName);
  const plan = planFor(spec, sequences, options);
  const chunks = makeChunks(sequences, plan.chunkSequences);
  const hidden = await runDecoderStack(source, sequences, chunks, options);

  const softmax = chunks.map((c) => new StreamingLogSoftmax(c.indices.length * c.seqLen));
  await lmHeadPass(source, hidden, chunks, plan.vocabBlockRows, options, (ci, start, end, logits) => {
    const c = chunks[ci]!;
    const blockMax = tf.max(logits, 1, true);
    const sumExp = tf.sum(tf.exp(tf.sub(logits, blockMax)), 1);
    const where: number[][] = [];
    c.indices.forEach((seqIndex, row) => {
      const seq = sequences[seqIndex]!;
      for (let t = 0; t + 1 < c.seqLen; t++) if (seq[t + 1]! >= start && seq[t + 1]! < end) where.push([row * c.seqLen + t, seq[t + 1]! - start]);
    });
    const tensors = where.length === 0 ? [blockMax, sumExp] : [blockMax, sumExp, tf.gatherND(logits, tf.tensor2d(where, [where.length, 2], 'int32'))];
    return {
      tensors,
      consume: ([max, sum, picked]) => {
        softmax[ci]!.addBlock(max!, sum!);
        if (picked) where.forEach(([position], k) => softmax[ci]!.setTargetLogit(position!, picked[k]!));
      },
    };
  });

  let total = 0;
  let count = 0;
  const perSequence: NllResult['perSequence'] = sequences.map(() => ({ meanNll: NaN, tokens: 0 }));
  const targetLogprobs = options.returnTargetLogprobs ? sequences.map((s) => new Float32Array(Math.max(0, s.length - 1)).fill(NaN)) : undefined;
  chunks.forEach((c, ci) => {
    c.indices.forEach((seqIndex, row) => {
      const mask = options.lossMasks?.[seqIndex];
      let sum = 0;
      let n = 0;
      for (let t = 0; t + 1 < c.seqLen; t++) {
        if (mask && !mask[t + 1]) continue;
        const logprob = softmax[ci]!.targetLogprob(row * c.seqLen + t);
        if (targetLogprobs) targetLogprobs[seqIndex]![t] = logprob;
        sum -= logprob;
        n++;
      }
      perSequence[seqIndex] = { meanNll: n > 0 ? sum / n : NaN, tokens: n };
      total += sum;
      count += n;
    });
  });
  if (count === 0) throw new UsageError('no prediction targets: sequences need at least two tokens (and a loss mask that keeps some)');
  const meanNll = total / count;
  return { meanNll, perplexity: Math.exp(meanNll), tokens: count, perSequence, plan, ...(targetLogprobs ? { targetLogprobs } : {}) };
}

/** Full logits [T, V] per sequence (row-major); for small inputs (tests, inspection). */
export async function computeLogits(source: WeightSource, sequences: readonly ArrayLike<number>[], options: StreamingOptions = {}): Promise<Float32Array[]> {
  const { spec } = source;
  checkTokens(spec, sequences);
  const totalTokens = sequences.reduce((a, s) => a + s.length, 0);
  if (totalTokens * spec.vocabSize * 4 > MAX_LOGITS_BYTES) {
    throw new ResourceLimitError(`full logits of ${totalTokens} tokens × ${spec.vocabSize} would take ${(totalTokens * spec.vocabSize * 4 / 1024 ** 3).toFixed(1)} GiB; use evaluateNll`);
  }
  const plan = planFor(spec, sequences, options);
  const chunks = makeChunks(sequences, plan.chunkSequences);
  const hidden = await runDecoderStack(source, sequences, chunks, options);
  const out = sequences.map((s) => new Float32Array(s.length * spec.vocabSize));
  const V = spec.vocabSize;
  await lmHeadPass(source, hidden, chunks, plan.vocabBlockRows, options, (ci, start, end, logits) => ({
    tensors: [logits],
    consume: ([block]) => {
      const c = chunks[ci]!;
      const w = end - start;
      c.indices.forEach((seqIndex, row) => {
        const dst = out[seqIndex]!;
        for (let t = 0; t < c.seqLen; t++) dst.set(block!.subarray((row * c.seqLen + t) * w, (row * c.seqLen + t + 1) * w), t * V + start);
      });
    },
  }));
  return out;
}

/** The plan within the budget and, on wasm, within its heap (tf.getBackend() is where the forward runs). */
function planFor(spec: ModelSpec, sequences: readonly ArrayLike<number>[], options: StreamingOptions): ForwardPlan {
  const seqLen = Math.max(...sequences.map((s) => s.length));
  const budget = options.maxMemoryBytes ?? DEFAULT_MAX_MEMORY_BYTES;
  const maxChunk = Math.min(options.batchSize ?? sequences.length, sequences.length);
  return planForward(spec, sequences.length, seqLen, budget, maxChunk, tfHeapAllowance(tf.getBackend()), maxStorageBindingBytes(), options.budgetName);
}

/**
 * A warning for sequences longer than the model's context (`max_position_embeddings`): the
 * rotary embedding computes any position, as transformers does, so this is not refused (extending
 * a context is a legitimate fine-tune), but positions past it were never trained and are usually
 * a --seq-len mistake.
 */
export function contextWarning(spec: ModelSpec, tokens: number, what = 'sequences'): string | undefined {
  if (tokens <= spec.maxPositionEmbeddings) return undefined;
  return `${what} reach ${tokens} tokens, past the model's context (max_position_embeddings ${spec.maxPositionEmbeddings}): it never saw positions beyond ${spec.maxPositionEmbeddings}`;
}

/** Refuses empty input and token ids outside the vocabulary; `source` (the data's files) prefixes the message. */
export function checkTokens(spec: ModelSpec, sequences: readonly ArrayLike<number>[], source?: string): void {
  const at = source !== undefined ? `${source}: ` : '';
  if (sequences.length === 0) throw new UsageError(`${at}no input sequences`);
  sequences.forEach((s, i) => {
    if (s.length === 0) throw new UsageError(`${at}sequence ${i} is empty`);
    for (let t = 0; t < s.length; t++) {
      const id = s[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
        throw new InputError(`${at}sequence ${i}, position ${t}: token id ${id} is outside the model's vocabulary [0, ${spec.vocabSize}) (data made for another model?)`, 'TOKEN_RANGE');
      }
    }
  });
}

/** Sequences grouped into chunks of equal length, at most `size` each, in input order within a length. */
function makeChunks(sequences: readonly ArrayLike<number>[], size: number): Chunk[] {
  const byLength = new Map<number, number[]>();
  sequences.forEach((s, i) => {
    const list = byLength.get(s.length) ?? [];
    list.push(i);
    byLength.set(s.length, list);
  });
  const chunks: Chunk[] = [];
  for (const [seqLen, indices] of byLength) {
    for (let k = 0; k < indices.length; k += size) chunks.push({ indices: indices.slice(k, k + size), seqLen });
  }
  return chunks;
}

/**
 * Embeds every chunk, streams all layers over all chunks, applies the final norm; returns the
 * normalised hidden states per chunk ([b·T, D] row-major).
 */
async function runDecoderStack(source: WeightSource, sequences: readonly ArrayLike<number>[], chunks: Chunk[], options: StreamingOptions): Promise<Float32Array[]> {
  const { spec } = source;
  const D = spec.hiddenSize;
  const hidden: Float32Array[] = [];
  for (const c of chunks) {
    const ids = new Int32Array(c.indices.length * c.seqLen);
    c.indices.forEach((s, row) => ids.set(Array.from(sequences[s]!), row * c.seqLen));
    hidden.push(await source.embeddingRows(ids));
  }
  const inv = ropeInverseFrequencies(spec.rope, spec.headDim);
  const ropes = new Map<number, RopeTensors>();
  for (const c of chunks) if (!ropes.has(c.seqLen)) ropes.set(c.seqLen, ropeTensors(inv, 0, c.seqLen));
  try {
    for (let layer = 0; layer < spec.numLayers; layer++) {
      options.signal?.throwIfAborted();
      const lease = await source.loadLayer(layer);
      try {
        const hooks = options.hooks?.(layer);
        for (let ci = 0; ci < chunks.length; ci++) {
          await yieldForSignals(options.signal);
          const c = chunks[ci]!;
          const reads: DeferredRead[] = [];
          const observe = options.observe && ((a: LayerActivations) => {
            const read = options.observe!({ ...a, sequenceIndices: c.indices });
            if (read) keepPending(read, reads);
          });
          try {
            const out = tf.tidy(() => {
              const x = tf.tensor3d(hidden[ci]!, [c.indices.length, c.seqLen, D]);
              return decoderLayer(x, lease.value, spec, { layer, rope: ropes.get(c.seqLen)!, ...(hooks ? { hooks } : {}), ...(observe ? { observe } : {}) });
            });
            hidden[ci] = await readAndDispose(out);
            await settle(reads);
          } finally {
            disposeReads(reads);
          }
        }
      } finally {
        lease.release();
      }
      options.onProgress?.({ stage: 'layer', done: layer + 1, total: spec.numLayers });
    }
  } finally {
    for (const r of ropes.values()) { r.cos.dispose(); r.signedSin.dispose(); }
  }
  const norm = await source.finalNorm();
  try {
    const normed: Float32Array[] = [];
    for (let ci = 0; ci < hidden.length; ci++) {
      const c = chunks[ci]!;
      normed.push(await readAndDispose(tf.tidy(() => rmsNorm(tf.tensor2d(hidden[ci]!, [c.indices.length * c.seqLen, D]), norm.value, spec.rmsNormEps))));
    }
    return normed;
  } finally {
    norm.release();
  }
}

/**
 * Applies lm_head block by block: for every vocab block [start, end) and every chunk, calls
 * `reduce` with the block's logits [b·T, end − start], inside a tidy scope; the tensors of the
 * DeferredRead it returns are read and consumed before the next chunk. (Positions in rows: the
 * wasm backend reduces along the last axis about fifteen times faster than along the first.)
 */
async function lmHeadPass(
  source: WeightSource,
  hidden: readonly Float32Array[],
  chunks: readonly Chunk[],
  blockRows: number,
  options: StreamingOptions,
  reduce: (chunk: number, start: number, end: number, logits: tf.Tensor2D) => DeferredRead,
): Promise<void> {
  const { spec } = source;
  const V = spec.vocabSize;
  const blocks = Math.ceil(V / blockRows);
  for (let b = 0; b < blocks; b++) {
    options.signal?.throwIfAborted();
    const start = b * blockRows;
    const end = Math.min(V, start + blockRows);
    const lease = await source.lmHeadRows(start, end);
    try {
      for (let ci = 0; ci < chunks.length; ci++) {
        await yieldForSignals(options.signal);
        const c = chunks[ci]!;
        const reads: DeferredRead[] = [];
        try {
          tf.tidy(() => {
            const h = tf.tensor2d(hidden[ci]!, [c.indices.length * c.seqLen, spec.hiddenSize]);
            keepPending(reduce(ci, start, end, linear(h, lease.value) as tf.Tensor2D), reads);
          });
          await settle(reads);
        } finally {
          disposeReads(reads);
        }
      }
    } finally {
      lease.release();
    }
    options.onProgress?.({ stage: 'lm_head', done: b + 1, total: blocks });
  }
}

/** Keeps a DeferredRead's tensors past the enclosing tidy scope and queues it. */
function keepPending(read: DeferredRead, queue: DeferredRead[]): void {
  for (const t of read.tensors) tf.keep(t);
  queue.push(read);
}

/** Reads every queued DeferredRead in order and hands its values to its consumer. */
async function settle(queue: readonly DeferredRead[]): Promise<void> {
  for (const read of queue) read.consume(await Promise.all(read.tensors.map(readFloat32)));
}

function disposeReads(queue: readonly DeferredRead[]): void {
  for (const read of queue) tf.dispose([...read.tensors]);
}

async function readAndDispose(t: tf.Tensor): Promise<Float32Array> {
  try {
    return await readFloat32(t);
  } finally {
    t.dispose();
  }
}
