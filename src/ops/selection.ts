/**
 * Choosing the units of a layer that an APEX stage expands (APEX-METHOD §2): the selection
 * size k, the advantageous set P, the disadvantageous set N, and for the `structured` setting
 * the extra directly-tuned set E. Deterministic; `analyze` and `finetune` both call
 * `selectModel` so the same flags give the same units.
 *
 * Choices made here (documented in docs/operator-format.md):
 * - E continues N's order: after N is taken, E is the next units of the same candidate pool by
 *   (score ascending, index ascending). Total directly-tuned count per layer =
 *   max(|P| + |N|, floor(n · tunedRatio)), limited by the units available.
 * - Decaying K: units used as N in earlier stages are removed from the candidate pool of P and
 *   N; when the pool holds fewer than 2k units, k shrinks to floor(pool / 2). In the
 *   `structured` setting they stay directly tuned: they open E (score ascending, index
 *   ascending), ahead of the pool's units after N, and are kept even where they alone exceed
 *   the tuned total (the reference's decaying-K run "retains earlier Min-K groups for direct
 *   training and excludes them from later selections").
 * - `reverse` swaps P and N after choosing them and leaves E as it is, so the ablation changes
 *   only the direction of the operator, not the set of directly-tuned units.
 * - `randomSeed` shuffles the score values among the units with one Rng(seed) consumed in
 *   layer order, heads before channels within a layer.
 */
import { UsageError } from '../errors.js';
import { Rng } from '../util/rng.js';

export type ScoreMode = 'rank' | 'avg';

export interface Selection {
  /** Advantageous units, by (score desc, index asc). */
  readonly P: Int32Array;
  /** Disadvantageous units, by (score asc, index asc). */
  readonly N: Int32Array;
  /** Extra directly-tuned units (structured setting), by (score asc, index asc); may be empty. */
  readonly E: Int32Array;
}

/** A relative tolerance on n·ratio so decimal ratios (0.29 · 100 = 28.999…) floor as a person expects. */
const FLOOR_TOLERANCE = 1e-9;

function floorTolerant(x: number): number {
  return Math.floor(x + Math.abs(x) * FLOOR_TOLERANCE);
}

/**
 * k = floor(n · ratio / 2^s); 1 when that is 0 and n ≥ 2; never more than floor(n / 2).
 * s = 1 for the standard schedule, the stage index (1, 2, …) for decaying K.
 */
export function selectionSize(n: number, ratio: number, s = 1): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`unit count must be a non-negative integer, got ${n}`);
  if (!Number.isFinite(ratio) || ratio <= 0 || ratio > 1) throw new UsageError(`--ratio must be in (0, 1], got ${ratio}`);
  if (!Number.isSafeInteger(s) || s < 0) throw new UsageError(`selection exponent s must be a non-negative integer, got ${s}`);
  let k = floorTolerant((n * ratio) / 2 ** s);
  if (k === 0 && n >= 2) k = 1;
  return Math.min(k, Math.floor(n / 2));
}

/** Total directly-tuned units of a layer: max(2k, floor(n · tunedRatio)), at most n. */
export function tunedCount(n: number, tunedRatio: number, k: number): number {
  if (!Number.isFinite(tunedRatio) || tunedRatio < 0 || tunedRatio > 1) throw new UsageError(`tuned ratio must be in [0, 1], got ${tunedRatio}`);
  return Math.min(n, Math.max(2 * k, floorTolerant(n * tunedRatio)));
}

export interface UnitSelectionOptions {
  /**
   * Units excluded from P and N (decaying K: units that were N in earlier stages); with
   * `tunedTotal` they lead E.
   */
  readonly exclude?: Iterable<number>;
  /** Total size of P ∪ N ∪ E; E is empty when this is absent or ≤ 2k. */
  readonly tunedTotal?: number;
  /** Ablation: swap P and N. */
  readonly reverse?: boolean;
}

/**
 * P, N (and E) for one layer and one unit kind from per-unit scores. Scores must be finite;
 * callers apply the random-selection shuffle before calling.
 */
export function selectUnits(scores: ArrayLike<number>, k: number, options: UnitSelectionOptions = {}): Selection {
  const n = scores.length;
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(scores[i]!)) throw new UsageError(`score of unit ${i} is ${scores[i]}; selection needs finite scores`);
  }
  if (!Number.isSafeInteger(k) || k < 0) throw new UsageError(`selection size must be a non-negative integer, got ${k}`);
  const excluded = new Set<number>();
  for (const u of options.exclude ?? []) excluded.add(u);
  const pool: number[] = [];
  for (let i = 0; i < n; i++) if (!excluded.has(i)) pool.push(i);
  const kk = Math.min(k, Math.floor(pool.length / 2));

  const descending = [...pool].sort((x, y) => scores[y]! - scores[x]! || x - y);
  const P = descending.slice(0, kk);
  const inP = new Set(P);
  const ascendingRest = pool.filter((u) => !inP.has(u)).sort((x, y) => scores[x]! - scores[y]! || x - y);
  const N = ascendingRest.slice(0, kk);
  const E: number[] = [];
  if (options.tunedTotal !== undefined) {
    const retained = [...excluded].filter((u) => u >= 0 && u < n).sort((x, y) => scores[x]! - scores[y]! || x - y);
    E.push(...retained);
    const extra = Math.max(0, options.tunedTotal - 2 * kk - retained.length);
    E.push(...ascendingRest.slice(kk, kk + extra));
  }
  return options.reverse
    ? { P: Int32Array.from(N), N: Int32Array.from(P), E: Int32Array.from(E) }
    : { P: Int32Array.from(P), N: Int32Array.from(N), E: Int32Array.from(E) };
}

/** Both kinds of score a recorder keeps for one layer and one unit kind. */
export interface UnitScores {
  /** Summed Top-k/Min-k counts (the method). */
  readonly rank: ArrayLike<number>;
  /** Averaged activation norms (the `avg` ablation); absent when a score file lacks them. */
  readonly avg?: ArrayLike<number>;
}

export interface LayerScoreInput {
  /** Head units: KV groups under GQA, query heads under MHA. */
  readonly heads: UnitScores;
  /** FFN channels. */
  readonly channels: UnitScores;
}

export interface ModelSelectionOptions {
  /** Default 0.375. */
  readonly ratio?: number;
  /** Stage index, 1-based. */
  readonly stage: number;
  /** Decaying K: s = stage instead of 1. */
  readonly decayK?: boolean;
  readonly score?: ScoreMode;
  /** Ablation: seeded shuffle of the scores, a fresh permutation at every stage (randomSelectionSeed). */
  readonly randomSeed?: number;
  readonly reverse?: boolean;
  /** Structured setting: directly-tuned fractions of heads / channels (E fills up to them). */
  readonly tunedAttnRatio?: number;
  readonly tunedFfnRatio?: number;
  /** Per layer, units used as N in earlier stages (only consulted with decayK). */
  readonly excluded?: readonly { readonly heads?: Iterable<number>; readonly channels?: Iterable<number> }[];
}

export interface LayerSelection {
  readonly layer: number;
  /** k before decaying-K pool limits (the counting k of the recorder). */
  readonly headK: number;
  readonly channelK: number;
  readonly heads: Selection;
  readonly channels: Selection;
}

export const DEFAULT_RATIO = 0.375;

/** The exponent s of the selection size for a stage: 1, or the stage index under decaying K. */
export function selectionExponent(stage: number, decayK: boolean): number {
  if (!Number.isSafeInteger(stage) || stage < 1) throw new UsageError(`stage must be a positive integer, got ${stage}`);
  return decayK ? stage : 1;
}

/**
 * The generator seed of random selection at a stage: the run's seed at stage 1, another one at
 * each later stage. One permutation for every stage would reselect much the same units whenever
 * the stages' scores correlate (the authors' random assessment draws a new permutation each time).
 */
export function randomSelectionSeed(seed: number, stage: number): number {
  return (Math.trunc(seed) + Math.imul(stage - 1, 0x85ebca6b)) >>> 0;
}

/** Selection for every layer, heads and channels, exactly as §2 describes. */
export function selectModel(layers: readonly LayerScoreInput[], options: ModelSelectionOptions): LayerSelection[] {
  const ratio = options.ratio ?? DEFAULT_RATIO;
  const s = selectionExponent(options.stage, options.decayK ?? false);
  const mode = options.score ?? 'rank';
  const rng = options.randomSeed !== undefined ? new Rng(randomSelectionSeed(options.randomSeed, options.stage)) : undefined;
  return layers.map((input, layer) => {
    const pick = (scores: UnitScores, tunedRatio: number | undefined, exclude: Iterable<number> | undefined) => {
      const chosen = scores[mode];
      if (chosen === undefined) throw new UsageError(`--score ${mode} needs averaged norms (the norm_avg tensors of a score file), which the scores of layer ${layer} do not include; use a score file apex wrote (it always has them), or --score rank`);
      const values = Array.from(chosen);
      const n = values.length;
      const k = selectionSize(n, ratio, s);
      if (rng) rng.shuffle(values);
      const selection = selectUnits(values, k, {
        exclude: options.decayK ? exclude : undefined,
        tunedTotal: tunedRatio !== undefined ? tunedCount(n, tunedRatio, k) : undefined,
        reverse: options.reverse,
      });
      return { k, selection };
    };
    const excluded = options.excluded?.[layer];
    const heads = pick(input.heads, options.tunedAttnRatio, excluded?.heads);
    const channels = pick(input.channels, options.tunedFfnRatio, excluded?.channels);
    return { layer, headK: heads.k, channelK: channels.k, heads: heads.selection, channels: channels.selection };
  });
}
