/**
 * Train / held-out split by whole documents, and seeded subsampling. Both are pure functions of
 * (count, fraction, seed), so a split is reproducible from what a run records.
 */
import { InputError } from '../errors.js';
import { Rng } from '../util/rng.js';

export type SplitName = 'all' | 'train' | 'heldout';

export const DEFAULT_HELDOUT_FRACTION = 0.05;

/** Indices of the held-out documents: a seeded round(n·fraction) of n, at least 1, leaving at least 1 for training. */
export function heldoutIndices(n: number, fraction: number, seed: number, evalDataName = '--eval-data'): Set<number> {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`held-out fraction must be in (0, 1), got ${fraction}`);
  if (n < 2) {
    throw new InputError(`the data holds ${n} document${n === 1 ? '' : 's'}; a held-out split needs at least 2 (pass more data or a separate ${evalDataName})`, 'TOO_FEW_DOCUMENTS');
  }
  const count = Math.min(n - 1, Math.max(1, Math.round(n * fraction)));
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  return new Set(order.slice(0, count));
}

/** The documents of one split, in their original order. */
export function selectSplit<T>(items: readonly T[], split: SplitName, fraction: number, seed: number, evalDataName?: string): T[] {
  if (split === 'all') return [...items];
  const held = heldoutIndices(items.length, fraction, seed, evalDataName);
  return items.filter((_, i) => held.has(i) === (split === 'heldout'));
}

/** A seeded choice of `k` of `n` indices (all when k ≥ n), returned in ascending order. */
export function sampleIndices(n: number, k: number | undefined, seed: number): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  if (k === undefined || k >= n) return all;
  return new Rng(seed).shuffle(all).slice(0, k).sort((a, b) => a - b);
}
