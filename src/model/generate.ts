/**
 * Autoregressive generation with a key/value cache: the prompt is run once (prefill), then one
 * token per step. Works on any WeightSource: a resident model for models that fit the memory
 * budget, or the streaming checkpoint source (layers re-read every step: slow, but memory
 * stays at one layer plus the cache) for models that do not.
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError, VerificationError } from '../errors.js';
import { Rng } from '../util/rng.js';
import { decoderLayerWithCache, type KeyValue } from './decoder-layer.js';
import { firstNonFinite } from './finite-check.js';
import { linear, rmsNorm } from './layer-math.js';
import { ropeInverseFrequencies, ropeTensors } from './rope.js';
import { chooseToken } from './sampling.js';
import { checkTokens } from './streaming-forward.js';
import { readFloat32 } from './tensor-read.js';
import type { WeightSource } from './weight-source.js';
import { yieldForSignals } from '../util/yield-for-signals.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 (default) → greedy. */
  temperature?: number;
  /** Nucleus sampling threshold, default 1 (off). */
  topP?: number;
  /** Top-k sampling, default 0 (off). */
  topK?: number;
  /** Row b samples from rowSeed(seed, b) (default seed 0), unless `seeds` gives each row's own. */
  seed?: number;
  /** One seed per prompt: a row's tokens then do not depend on which rows share its batch. */
  seeds?: readonly number[];
  /** A sequence stops after producing one of these (it is kept in the output). */
  stopTokenIds?: readonly number[];
  signal?: AbortSignal;
  onStep?: (step: number, total: number) => void;
}

export interface GenerateResult {
  /** Per prompt: prompt followed by the generated tokens. */
  sequences: Int32Array[];
  /** Per prompt: only the generated tokens. */
  generated: Int32Array[];
  /** Per prompt: whether it ended on a stop token. */
  stopped: boolean[];
}

/**
 * The sampling seed of the row-th prompt: each prompt has its own random stream, so its tokens are
 * the same whether it runs alone or batched with others (apex generate splits and groups prompts
 * by length and memory). Row 0 uses the seed itself; rows are spread by the golden-ratio constant.
 */
export function rowSeed(seed: number, row: number): number {
  return (Math.trunc(seed) + Math.imul(row, 0x9e3779b9)) >>> 0;
}

/** Vocab rows per lm_head block when scoring the last position. */
const LM_HEAD_BLOCK_ROWS = 8192;

/**
 * Prompt positions run through the model at once. A longer prompt is run in pieces that each
 * attend to the cache of the earlier ones (the same function, up to float rounding), so its
 * activations and attention scores stay within [B, PREFILL_CHUNK, …] instead of growing with the
 * square of the prompt.
 */
export const PREFILL_CHUNK = 512;

export async function generate(source: WeightSource, prompts: readonly ArrayLike<number>[], options: GenerateOptions): Promise<GenerateResult> {
  const { spec } = source;
  checkTokens(spec, prompts);
  const P = prompts[0]!.length;
  if (prompts.some((p) => p.length !== P)) throw new UsageError('all prompts of one generate call must have the same number of tokens');
  if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 0) throw new UsageError(`max new tokens must be a non-negative integer, got ${options.maxNewTokens}`);
  const temperature = options.temperature ?? 0;
  const topP = options.topP ?? 1;
  if (!(temperature >= 0)) throw new UsageError(`temperature must be ≥ 0, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new UsageError(`top-p must be in (0, 1], got ${topP}`);
  const topK = options.topK ?? 0;
  if (!Number.isSafeInteger(topK) || topK < 0) throw new UsageError(`top-k must be an integer ≥ 0, got ${topK}`);
  if (options.seeds !== undefined && options.seeds.length !== prompts.length) throw new UsageError(`${options.seeds.length} seeds for ${prompts.length} prompts`);
  const rngs = prompts.map((_, b) => new Rng(options.seeds?.[b] ?? rowSeed(options.seed ?? 0, b)));
  const stops = new Set(options.stopTokenIds ?? []);
  const B = prompts.length;
  const generated: number[][] = prompts.map(() => []);
  const stopped = prompts.map(() => false);
  const inv = ropeInverseFrequencies(spec.rope, spec.headDim);
  const cache: (KeyValue | undefined)[] = new Array(spec.numLayers).fill(undefined);
  try {
    let input: number[][] = prompts.map((p) => Array.from(p));
    let position = 0;
    for (let step = 0; step < options.maxNewTokens; step++) {
      // On cpu/wasm with resident weights a step never waits on I/O: without this Ctrl-C waited for the last token.
      await yieldForSignals(options.signal);
      // The prompt's pieces before its last one only fill the cache.
      while (input[0]!.length > PREFILL_CHUNK) {
        await runPositions(source, input.map((row) => row.slice(0, PREFILL_CHUNK)), position, inv, cache, false);
        position += PREFILL_CHUNK;
        input = input.map((row) => row.slice(PREFILL_CHUNK));
        await yieldForSignals(options.signal);
      }
      const last = (await runPositions(source, input, position, inv, cache, true))!;
      position += input[0]!.length;
      for (let b = 0; b < B; b++) {
        if (stopped[b]) continue;
        const token = chooseToken(last.subarray(b * spec.vocabSize, (b + 1) * spec.vocabSize), { temperature, topP, topK }, rngs[b]!);
        generated[b]!.push(token);
        if (stops.has(token)) stopped[b] = true;
      }
      options.onStep?.(step + 1, options.maxNewTokens);
      if (stopped.every((s) => s)) break;
      // Finished sequences keep being fed (their last token) so the batch stays rectangular.
      input = generated.map((g, b) => [g.length > 0 ? g[g.length - 1]! : prompts[b]![P - 1]!]);
    }
  } finally {
    for (const kv of cache) if (kv) { kv.key.dispose(); kv.value.dispose(); }
  }
  return {
    sequences: prompts.map((p, b) => Int32Array.from([...Array.from(p), ...generated[b]!])),
    generated: generated.map((g) => Int32Array.from(g)),
    stopped,
  };
}

/** Runs `tokens` [B, T] at positions position… through all layers (updating the cache); with `logits`, those of the last position, [B·V]. */
async function runPositions(source: WeightSource, tokens: number[][], position: number, inv: Float32Array, cache: (KeyValue | undefined)[], logits: boolean): Promise<Float32Array | undefined> {
  const { spec } = source;
  const B = tokens.length;
  const T = tokens[0]!.length;
  const D = spec.hiddenSize;
  const embedded = await source.embeddingRows(tokens.flat());
  let x = tf.tensor3d(embedded, [B, T, D]);
  const rope = ropeTensors(inv, position, T);
  try {
    for (let layer = 0; layer < spec.numLayers; layer++) {
      const lease = await source.loadLayer(layer);
      try {
        const past = cache[layer];
        const { hidden, present } = tf.tidy(() => {
          const r = decoderLayerWithCache(x, lease.value, spec, { layer, rope, ...(past ? { past } : {}) });
          return { hidden: r.hidden, present: { key: r.present.key, value: r.present.value } };
        });
        if (past) { past.key.dispose(); past.value.dispose(); }
        cache[layer] = present as KeyValue;
        x.dispose();
        x = hidden as tf.Tensor3D;
      } finally {
        lease.release();
      }
    }
  } finally {
    rope.cos.dispose();
    rope.signedSin.dispose();
  }
  if (!logits) {
    x.dispose();
    return undefined;
  }
  const norm = await source.finalNorm();
  const h = tf.tidy(() => rmsNorm(tf.reshape(tf.slice(x, [0, T - 1, 0], [B, 1, D]), [B, D]), norm.value, spec.rmsNormEps));
  norm.release();
  x.dispose();
  const V = spec.vocabSize;
  const out = new Float32Array(B * V);
  try {
    for (let start = 0; start < V; start += LM_HEAD_BLOCK_ROWS) {
      const end = Math.min(V, start + LM_HEAD_BLOCK_ROWS);
      const lease = await source.lmHeadRows(start, end);
      let block: Float32Array;
      try {
        const logits = tf.tidy(() => linear(h, lease.value));
        try {
          block = await readFloat32(logits);
        } finally {
          logits.dispose();
        }
      } finally {
        lease.release();
      }
      for (let b = 0; b < B; b++) out.set(block.subarray(b * (end - start), (b + 1) * (end - start)), b * V + start);
    }
  } finally {
    h.dispose();
  }
  // A NaN/Inf logit would be sampled as some token (greedy picks id 0): refuse instead.
  const i = firstNonFinite(out);
  if (i >= 0) {
    throw new VerificationError(
      `the logits are not finite (sequence ${Math.floor(i / V)}, token id ${i % V}: ${out[i]}) at position ${position + T - 1}: a weight holds NaN/Inf or the forward pass overflows`,
      'NON_FINITE_LOGITS',
    );
  }
  return out;
}
