/**
 * Train / held-out split by whole documents, and seeded subsampling. Both are pure functions of
 * (count, fraction, seed), so a split is reproducible from what a run records; a stage also
 * writes which documents a split held out (`HeldoutDocuments`, its heldout.json), so it can be
 * audited without apex.
 */
import { InputError } from '../errors.js';
import { Rng } from '../util/rng.js';

export type SplitName = 'all' | 'train' | 'heldout';

export const DEFAULT_HELDOUT_FRACTION = 0.05;

/** Indices of the held-out documents: a seeded round(n·fraction) of n, at least 1, leaving at least 1 for training. */
export function heldoutIndices(n: number, fraction: number, seed: number, evalDataName = '--eval-data', dataName?: string): Set<number> {
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`held-out fraction must be in (0, 1), got ${fraction}`);
  if (n < 2) {
    throw new InputError(`the data${dataName !== undefined ? ` (${dataName})` : ''} holds ${n} document${n === 1 ? '' : 's'}; a held-out split needs at least 2 (pass more data or a separate ${evalDataName})`, 'TOO_FEW_DOCUMENTS');
  }
  const count = Math.min(n - 1, Math.max(1, Math.round(n * fraction)));
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  return new Set(order.slice(0, count));
}

/** The documents of one split, in their original order. */
export function selectSplit<T>(items: readonly T[], split: SplitName, fraction: number, seed: number, evalDataName?: string, dataName?: string): T[] {
  if (split === 'all') return [...items];
  const held = heldoutIndices(items.length, fraction, seed, evalDataName, dataName);
  return items.filter((_, i) => held.has(i) === (split === 'heldout'));
}

/** A seeded choice of `k` of `n` indices (all when k ≥ n), returned in ascending order. */
export function sampleIndices(n: number, k: number | undefined, seed: number): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  if (k === undefined || k >= n) return all;
  return new Rng(seed).shuffle(all).slice(0, k).sort((a, b) => a - b);
}

export const HELDOUT_SCHEMA = 'apex.heldout/1';

/** One data file's part of a split: which of its documents were held out. */
export interface HeldoutFile {
  /** The file as the data record lists it (`paths`), with its sha256. */
  readonly path: string;
  readonly sha256: string;
  /** The documents apex read from the file; the held-out ones are 0-based indices into them. */
  readonly documents: number;
  /** Held-out documents as inclusive [first, last] index ranges, ascending; empty when none. */
  readonly heldout: ReadonlyArray<readonly [number, number]>;
}

/**
 * The held-out documents of a split, file by file in the data's order: enough to rebuild or
 * audit the split outside apex (the indices are those `heldoutIndices` draws over all files'
 * documents in order, cut at the file boundaries).
 */
export interface HeldoutDocuments {
  readonly schema: typeof HELDOUT_SCHEMA;
  readonly fraction: number;
  readonly seed: number;
  /** Documents of all files, and how many of them were held out. */
  readonly documents: number;
  readonly heldout: number;
  readonly files: readonly HeldoutFile[];
}

/** The held-out documents of the split of these files' documents (in this order) by `fraction` and `seed`. */
export function heldoutDocuments(
  files: ReadonlyArray<{ readonly path: string; readonly sha256: string; readonly documents: number }>,
  fraction: number,
  seed: number,
  evalDataName?: string,
): HeldoutDocuments {
  const total = files.reduce((n, f) => n + f.documents, 0);
  const held = heldoutIndices(total, fraction, seed, evalDataName);
  let first = 0; // index of the file's first document among all documents
  const out = files.map((f): HeldoutFile => {
    const mine: number[] = [];
    for (let d = 0; d < f.documents; d++) if (held.has(first + d)) mine.push(d);
    first += f.documents;
    return { path: f.path, sha256: f.sha256, documents: f.documents, heldout: indexRanges(mine) };
  });
  return { schema: HELDOUT_SCHEMA, fraction, seed, documents: total, heldout: held.size, files: out };
}

/** Ascending indices as inclusive [first, last] runs: [2, 3, 4, 9] → [[2, 4], [9, 9]]. */
export function indexRanges(ascending: readonly number[]): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (const i of ascending) {
    const last = ranges.at(-1);
    if (last !== undefined && i === last[1] + 1) last[1] = i;
    else ranges.push([i, i]);
  }
  return ranges;
}

/** heldout.json's text: the header fields one per line, each file on one line (thousands of files stay readable). */
export function formatHeldoutJson(record: HeldoutDocuments): string {
  const { files, ...head } = record;
  const top = JSON.stringify(head, null, 2).replace(/\n\}$/, '');
  return `${top},\n  "files": [\n${files.map((f) => `    ${JSON.stringify(f)}`).join(',\n')}\n  ]\n}\n`;
}
