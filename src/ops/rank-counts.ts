/**
 * Advantage assessment (APEX-METHOD §2): per micro-batch unit activation norms turned into
 * Top-k / Min-k rank counts, summed over micro-batches, plus the averaged norms and the
 * per-layer spread diagnostics. The forward pass supplies per-micro-batch sums of squares
 * (padding already excluded by the caller); this module only does the arithmetic.
 *
 * Top-k and Min-k are chosen independently, each with ties broken by unit index (lower index
 * first), as §2 states. With k ≤ floor(n/2) they are disjoint unless norms tie; a unit in
 * both (e.g. all norms equal) receives +1 and −1.
 */
import { InputError, VerificationError } from '../errors.js';

/**
 * KV-group norms A_g = sqrt(Σ_{h in g} A_h²) from per-query-head sums of squares (A_h² =
 * sumsq_h); query head h belongs to group h // (H / nKv), as in HF `repeat_kv`.
 */
export function groupHeadNorms(headSumsq: ArrayLike<number>, numKvHeads: number): Float64Array {
  const H = headSumsq.length;
  if (numKvHeads < 1 || H % numKvHeads !== 0) throw new RangeError(`${H} query heads do not split into ${numKvHeads} KV groups`);
  const perGroup = H / numKvHeads;
  const out = new Float64Array(numKvHeads);
  for (let h = 0; h < H; h++) out[Math.floor(h / perGroup)]! += headSumsq[h]!;
  for (let g = 0; g < numKvHeads; g++) out[g] = Math.sqrt(out[g]!);
  return out;
}

/** Unit norms A = sqrt(sumsq). */
export function normsFromSumsq(sumsq: ArrayLike<number>): Float64Array {
  const out = new Float64Array(sumsq.length);
  for (let i = 0; i < sumsq.length; i++) out[i] = Math.sqrt(sumsq[i]!);
  return out;
}

/** Indices of the k largest norms, by (norm desc, index asc). */
export function topK(norms: ArrayLike<number>, k: number): number[] {
  return sortedIndices(norms, (a, b) => norms[b]! - norms[a]! || a - b).slice(0, k);
}

/** Indices of the k smallest norms, by (norm asc, index asc). */
export function minK(norms: ArrayLike<number>, k: number): number[] {
  return sortedIndices(norms, (a, b) => norms[a]! - norms[b]! || a - b).slice(0, k);
}

function sortedIndices(norms: ArrayLike<number>, cmp: (a: number, b: number) => number): number[] {
  const idx = Array.from({ length: norms.length }, (_, i) => i);
  return idx.sort(cmp);
}

/** One micro-batch's counts: +1 for each unit in its Top-k, −1 for each unit in its Min-k. */
export function rankCounts(norms: ArrayLike<number>, kRequested: number): Int32Array {
  for (let i = 0; i < norms.length; i++) {
    if (!Number.isFinite(norms[i]!)) throw new VerificationError(`activation norm of unit ${i} is ${norms[i]}; the forward pass produced NaN/Inf`);
  }
  const n = norms.length;
  const counts = new Int32Array(n);
  const k = Math.min(kRequested, n);
  if (k <= 0) return counts;
  // The same sets as topK/minK, without sorting indices by a comparator (which the recorder
  // paid per layer, unit type and micro-batch): a native numeric sort of the values gives the
  // k-th largest and k-th smallest norms, units strictly beyond them are in, and ties at the
  // threshold are taken by index, lower first, until k are in.
  const sorted = Float64Array.from(norms).sort();
  markBeyond(norms, k, sorted[n - k]!, (x, t) => x > t, counts, 1);
  markBeyond(norms, k, sorted[k - 1]!, (x, t) => x < t, counts, -1);
  return counts;
}

function markBeyond(norms: ArrayLike<number>, k: number, threshold: number, beyond: (x: number, t: number) => boolean, counts: Int32Array, delta: number): void {
  let taken = 0;
  for (let i = 0; i < norms.length; i++) {
    if (beyond(norms[i]!, threshold)) {
      counts[i]! += delta;
      taken++;
    }
  }
  for (let i = 0; i < norms.length && taken < k; i++) {
    if (norms[i] === threshold) {
      counts[i]! += delta;
      taken++;
    }
  }
}

/** Population standard deviation and coefficient of variation std/mean (0 when the mean is 0). */
export function spread(values: ArrayLike<number>): { mean: number; std: number; cv: number } {
  const n = values.length;
  if (n === 0) return { mean: 0, std: 0, cv: 0 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i]!;
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += (values[i]! - mean) ** 2;
  const std = Math.sqrt(sq / n);
  return { mean, std, cv: mean === 0 ? 0 : std / mean };
}

export interface RecorderShape {
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly intermediateSize: number;
  /** k used for counting head units (the selection size of the layer). */
  readonly headK: number;
  /** k used for counting channels. */
  readonly channelK: number;
}

/** Plain-JSON recorder state (numbers round-trip exactly through JSON). */
export interface RankRecorderState extends RecorderShape {
  readonly version: 1;
  /** Micro-batches recorded, per layer. */
  readonly microBatches: number[];
  /** [L·nKv] summed counts per head unit. */
  readonly headCounts: number[];
  /** [L·I] summed counts per channel. */
  readonly channelCounts: number[];
  /** [L·H] summed per-query-head norms. */
  readonly headNormSums: number[];
  /** [L·nKv] summed head-unit (KV-group) norms. */
  readonly unitNormSums: number[];
  /** [L·I] summed channel norms. */
  readonly channelNormSums: number[];
}

export interface SpreadStats {
  readonly mean: number;
  readonly std: number;
  readonly cv: number;
}

/**
 * Accumulates rank counts and norms over micro-batches for every layer. Head units are KV
 * groups (= query heads under MHA); per-query-head norm averages are kept as well for reports.
 */
export class RankCountRecorder {
  private readonly micro: Int32Array;
  private readonly headCounts: Int32Array;
  private readonly channelCounts: Int32Array;
  private readonly headNormSums: Float64Array;
  private readonly unitNormSums: Float64Array;
  private readonly channelNormSums: Float64Array;

  constructor(readonly shape: RecorderShape) {
    const { numLayers: L, numHeads: H, numKvHeads: G, intermediateSize: I, headK, channelK } = shape;
    for (const [name, v] of Object.entries({ numLayers: L, numHeads: H, numKvHeads: G, intermediateSize: I, headK, channelK })) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`RankCountRecorder: ${name} must be a non-negative integer, got ${v}`);
    }
    if (G < 1 || H % G !== 0) throw new RangeError(`RankCountRecorder: ${H} heads do not split into ${G} KV groups`);
    if (headK > Math.floor(G / 2) || channelK > Math.floor(I / 2)) throw new RangeError(`RankCountRecorder: k must be at most half the units (headK ${headK} of ${G}, channelK ${channelK} of ${I})`);
    this.micro = new Int32Array(L);
    this.headCounts = new Int32Array(L * G);
    this.channelCounts = new Int32Array(L * I);
    this.headNormSums = new Float64Array(L * H);
    this.unitNormSums = new Float64Array(L * G);
    this.channelNormSums = new Float64Array(L * I);
  }

  /**
   * Records one micro-batch of one layer: `headSumsq` [H] per query head and `channelSumsq`
   * [I] per channel, each the sum of squares over the micro-batch's non-padding tokens.
   */
  record(layer: number, headSumsq: ArrayLike<number>, channelSumsq: ArrayLike<number>): void {
    const { numLayers, numHeads: H, numKvHeads: G, intermediateSize: I, headK, channelK } = this.shape;
    if (!Number.isSafeInteger(layer) || layer < 0 || layer >= numLayers) throw new RangeError(`layer ${layer} outside 0..${numLayers - 1}`);
    if (headSumsq.length !== H || channelSumsq.length !== I) {
      throw new RangeError(`layer ${layer}: expected ${H} head and ${I} channel sums of squares, got ${headSumsq.length} and ${channelSumsq.length}`);
    }
    const headNorms = normsFromSumsq(headSumsq);
    const unitNorms = groupHeadNorms(headSumsq, G);
    const channelNorms = normsFromSumsq(channelSumsq);
    const hc = rankCounts(unitNorms, headK);
    const cc = rankCounts(channelNorms, channelK);
    for (let g = 0; g < G; g++) {
      this.headCounts[layer * G + g]! += hc[g]!;
      this.unitNormSums[layer * G + g]! += unitNorms[g]!;
    }
    for (let h = 0; h < H; h++) this.headNormSums[layer * H + h]! += headNorms[h]!;
    for (let c = 0; c < I; c++) {
      this.channelCounts[layer * I + c]! += cc[c]!;
      this.channelNormSums[layer * I + c]! += channelNorms[c]!;
    }
    this.micro[layer]! += 1;
  }

  microBatches(layer: number): number {
    return this.micro[layer]!;
  }

  /** Summed counts per head unit [nKv] (the `rank` score). */
  headScores(layer: number): Int32Array {
    const G = this.shape.numKvHeads;
    return this.headCounts.slice(layer * G, (layer + 1) * G);
  }

  /** Summed counts per channel [I]. */
  channelScores(layer: number): Int32Array {
    const I = this.shape.intermediateSize;
    return this.channelCounts.slice(layer * I, (layer + 1) * I);
  }

  /** Averaged head-unit norms [nKv] (the `avg` score). */
  headUnitNormAvg(layer: number): Float64Array {
    return this.average(this.unitNormSums, layer, this.shape.numKvHeads);
  }

  /** Averaged per-query-head norms [H] (for reports; equals headUnitNormAvg under MHA). */
  headNormAvg(layer: number): Float64Array {
    return this.average(this.headNormSums, layer, this.shape.numHeads);
  }

  /** Averaged channel norms [I]. */
  channelNormAvg(layer: number): Float64Array {
    return this.average(this.channelNormSums, layer, this.shape.intermediateSize);
  }

  /** §2 diagnostics: spread of the averaged unit norms of a layer (head units and channels). */
  diagnostics(layer: number): { heads: SpreadStats; channels: SpreadStats } {
    return { heads: spread(this.headUnitNormAvg(layer)), channels: spread(this.channelNormAvg(layer)) };
  }

  private average(sums: Float64Array, layer: number, n: number): Float64Array {
    const out = sums.slice(layer * n, (layer + 1) * n);
    const m = this.micro[layer]!;
    if (m > 0) for (let i = 0; i < n; i++) out[i] = out[i]! / m;
    return out;
  }

  state(): RankRecorderState {
    return {
      version: 1,
      ...this.shape,
      microBatches: Array.from(this.micro),
      headCounts: Array.from(this.headCounts),
      channelCounts: Array.from(this.channelCounts),
      headNormSums: Array.from(this.headNormSums),
      unitNormSums: Array.from(this.unitNormSums),
      channelNormSums: Array.from(this.channelNormSums),
    };
  }

  /** Restores a recorder from `state()` (e.g. a training checkpoint), checking every length. */
  static fromState(state: RankRecorderState): RankCountRecorder {
    if (state?.version !== 1) throw new InputError(`rank recorder state: unsupported version ${String(state?.version)}`, 'CHECKPOINT_STATE');
    const shape: RecorderShape = {
      numLayers: state.numLayers,
      numHeads: state.numHeads,
      numKvHeads: state.numKvHeads,
      intermediateSize: state.intermediateSize,
      headK: state.headK,
      channelK: state.channelK,
    };
    let rec: RankCountRecorder;
    try {
      rec = new RankCountRecorder(shape);
    } catch (e) {
      throw new InputError(`rank recorder state: ${(e as Error).message}`, 'CHECKPOINT_STATE');
    }
    const fill = (name: keyof RankRecorderState, target: Int32Array | Float64Array, integer: boolean) => {
      const src = state[name] as unknown;
      if (!Array.isArray(src) || src.length !== target.length) {
        throw new InputError(`rank recorder state: '${name}' must be an array of ${target.length} numbers`, 'CHECKPOINT_STATE');
      }
      src.forEach((v, i) => {
        if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isSafeInteger(v))) {
          throw new InputError(`rank recorder state: '${name}'[${i}] is not a finite${integer ? ' integer' : ''} number`, 'CHECKPOINT_STATE');
        }
        target[i] = v;
      });
    };
    fill('microBatches', rec.micro, true);
    fill('headCounts', rec.headCounts, true);
    fill('channelCounts', rec.channelCounts, true);
    fill('headNormSums', rec.headNormSums, false);
    fill('unitNormSums', rec.unitNormSums, false);
    fill('channelNormSums', rec.channelNormSums, false);
    return rec;
  }
}
