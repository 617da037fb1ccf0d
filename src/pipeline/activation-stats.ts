/**
 * The activation statistics of the APEX assessment (APEX-METHOD §2) as the streaming forward
 * produces them: per sequence and layer, Σ over tokens and head dims of the squared attention
 * output per query head, and Σ over tokens of silu(gate)² per FFN channel. The forward passes
 * every sequence through layer l before layer l+1, so a layer's statistics are complete when
 * the next layer starts; `LayerStatsCollector` sums them per micro-batch and hands each
 * micro-batch to the rank-count recorder then.
 *
 * Padding never reaches this module: callers trim sequences to their real length first (the
 * forward groups sequences of equal length, so no padded position is ever computed).
 */
import * as tf from '@tensorflow/tfjs';
import { VerificationError } from '../errors.js';
import { firstNonFinite } from '../model/finite-check.js';
import type { RankCountRecorder } from '../ops/rank-counts.js';
import type { DeferredRead, StreamedLayerActivations } from '../model/streaming-forward.js';

export interface StatsShape {
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
}

/** Per-sequence sums of squares of one chunk: heads [rows·H], channels [rows·I], row-major. */
export interface ChunkSumsq {
  readonly heads: Float32Array;
  readonly channels: Float32Array;
}

/**
 * Reduces a chunk's activations to per-sequence sums of squares on the backend (runs inside the
 * forward's tidy, as its observer); `use` receives them once the forward has read them back.
 */
export function chunkSumsq(activations: StreamedLayerActivations, shape: StatsShape, use: (sums: ChunkSumsq) => void): DeferredRead {
  const [b, T] = activations.attention.shape;
  const perHead = tf.reshape(activations.attention, [b, T, shape.numHeads, shape.headDim]);
  const heads = tf.sum(tf.square(perHead), [1, 3]);
  const channels = tf.sum(tf.square(activations.gate), 1);
  return { tensors: [heads, channels], consume: ([h, c]) => use({ heads: h!, channels: c! }) };
}

/** Per-sequence statistics of every layer, in the layout of the reference outputs: [L, B, H] and [L, B, I]. */
export interface SequenceStatsDump {
  readonly headSumsq: Float32Array;
  readonly gateSumsq: Float32Array;
}

/** Number of micro-batches of `size` consecutive sequences (the last one may be smaller). */
export function microBatchCount(sequences: number, size: number): number {
  return Math.ceil(sequences / size);
}

/**
 * Sums per-sequence statistics into micro-batches of consecutive sequences (sequence s belongs
 * to micro-batch floor(s / size)) for the layer being computed, and records every micro-batch
 * of a finished layer, in order, into a RankCountRecorder. Optionally keeps every sequence's
 * statistics for `--dump-stats`.
 */
export class LayerStatsCollector {
  private readonly heads: Float64Array;
  private readonly channels: Float64Array;
  private readonly seen: Uint8Array;
  private layer = -1;
  readonly dump: SequenceStatsDump | undefined;

  constructor(
    readonly shape: StatsShape,
    readonly sequences: number,
    readonly microBatchSize: number,
    options: { keepPerSequence?: boolean } = {},
  ) {
    if (!Number.isSafeInteger(microBatchSize) || microBatchSize < 1) throw new RangeError(`micro-batch size must be a positive integer, got ${microBatchSize}`);
    const batches = microBatchCount(sequences, microBatchSize);
    this.heads = new Float64Array(batches * shape.numHeads);
    this.channels = new Float64Array(batches * shape.intermediateSize);
    this.seen = new Uint8Array(sequences);
    this.dump = options.keepPerSequence
      ? {
          headSumsq: new Float32Array(shape.numLayers * sequences * shape.numHeads),
          gateSumsq: new Float32Array(shape.numLayers * sequences * shape.intermediateSize),
        }
      : undefined;
  }

  get microBatches(): number {
    return microBatchCount(this.sequences, this.microBatchSize);
  }

  /**
   * Adds one sequence's sums of squares for `layer`. Layers must arrive in order; a layer's
   * sequences in any order. Non-finite values are a VerificationError naming layer, kind,
   * sequence and unit.
   */
  addSequence(layer: number, sequence: number, headSumsq: ArrayLike<number>, channelSumsq: ArrayLike<number>): void {
    const { numHeads: H, intermediateSize: I } = this.shape;
    if (layer !== this.layer) {
      if (this.layer >= 0) throw new RangeError(`layer ${layer} started before layer ${this.layer} was finished`);
      this.layer = layer;
    }
    if (!Number.isSafeInteger(sequence) || sequence < 0 || sequence >= this.sequences) throw new RangeError(`sequence ${sequence} outside 0..${this.sequences - 1}`);
    if (this.seen[sequence]) throw new RangeError(`layer ${layer}: sequence ${sequence} observed twice`);
    if (headSumsq.length !== H || channelSumsq.length !== I) throw new RangeError(`expected ${H} head and ${I} channel sums of squares, got ${headSumsq.length} and ${channelSumsq.length}`);
    checkFinite(headSumsq, layer, sequence, 'attention output (before o_proj)', 'query head');
    checkFinite(channelSumsq, layer, sequence, 'FFN gate activation silu(x·W_gateᵀ)', 'channel');
    this.seen[sequence] = 1;
    const m = Math.floor(sequence / this.microBatchSize);
    for (let h = 0; h < H; h++) this.heads[m * H + h]! += headSumsq[h]!;
    for (let c = 0; c < I; c++) this.channels[m * I + c]! += channelSumsq[c]!;
    if (this.dump) {
      this.dump.headSumsq.set(headSumsq, (layer * this.sequences + sequence) * H);
      this.dump.gateSumsq.set(channelSumsq, (layer * this.sequences + sequence) * I);
    }
  }

  /** Adds a chunk as the streaming forward hands it over. */
  addChunk(layer: number, sequenceIndices: readonly number[], sums: ChunkSumsq): void {
    const { numHeads: H, intermediateSize: I } = this.shape;
    sequenceIndices.forEach((seq, row) => {
      this.addSequence(layer, seq, sums.heads.subarray(row * H, (row + 1) * H), sums.channels.subarray(row * I, (row + 1) * I));
    });
  }

  /** The layer whose statistics are being collected (−1 before the first). */
  get currentLayer(): number {
    return this.layer;
  }

  /**
   * Records every micro-batch of the current layer into `recorder` (micro-batch order) and
   * starts afresh. Every sequence must have been seen.
   */
  finishLayer(recorder: RankCountRecorder): void {
    const { numHeads: H, intermediateSize: I } = this.shape;
    const missing = this.seen.indexOf(0);
    if (missing >= 0) throw new VerificationError(`layer ${this.layer}: the forward pass produced no activations for sequence ${missing}`);
    for (let m = 0; m < this.microBatches; m++) {
      recorder.record(this.layer, this.heads.subarray(m * H, (m + 1) * H), this.channels.subarray(m * I, (m + 1) * I));
    }
    this.heads.fill(0);
    this.channels.fill(0);
    this.seen.fill(0);
    this.layer = -1;
  }
}

function checkFinite(values: ArrayLike<number>, layer: number, sequence: number, kind: string, unit: string): void {
  const i = firstNonFinite(values);
  if (i >= 0) {
    throw new VerificationError(`layer ${layer}: ${kind} is ${Number.isNaN(values[i]!) ? 'NaN' : 'infinite'} (sequence ${sequence}, ${unit} ${i}); the model or its input produces non-finite activations`, 'NON_FINITE_ACTIVATIONS');
  }
}
