import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { randomSelectionSeed, selectModel, selectUnits, selectionSize, tunedCount, type LayerScoreInput } from '../../src/ops/selection.js';
import { Rng } from '../../src/util/rng.js';

const list = (a: Int32Array) => Array.from(a);

describe('selectionSize', () => {
  it('follows k = floor(n·ratio/2^s) with the reference numbers', () => {
    expect(selectionSize(32, 0.375)).toBe(6); // 6 of 32 heads
    expect(selectionSize(11008, 0.375)).toBe(2064); // 2,064 of 11,008 channels
    expect(selectionSize(5632, 0.375)).toBe(1056);
  });

  it('keeps one pair when the formula gives 0 and n ≥ 2', () => {
    expect(selectionSize(4, 0.375)).toBe(1); // floor(0.75) = 0 → 1
    expect(selectionSize(2, 0.375)).toBe(1);
    expect(selectionSize(1, 0.375)).toBe(0);
    expect(selectionSize(0, 0.375)).toBe(0);
  });

  it('never exceeds floor(n/2)', () => {
    expect(selectionSize(10, 1, 0)).toBe(5);
    expect(selectionSize(3, 1, 0)).toBe(1);
  });

  it('halves with the stage index under decaying K', () => {
    expect(selectionSize(32, 0.375, 1)).toBe(6);
    expect(selectionSize(32, 0.375, 2)).toBe(3);
    expect(selectionSize(32, 0.375, 3)).toBe(1); // floor(1.5)
    expect(selectionSize(32, 0.375, 6)).toBe(1); // 0 → 1
  });

  it('floors decimal ratios as written, not as binary-rounded', () => {
    expect(selectionSize(100, 0.29, 0)).toBe(29); // 100·0.29 = 28.999999999999996 in binary
  });

  it('refuses bad ratios', () => {
    expect(() => selectionSize(10, 0)).toThrow(UsageError);
    expect(() => selectionSize(10, 1.5)).toThrow(UsageError);
    expect(() => selectionSize(10, Number.NaN)).toThrow(UsageError);
  });
});

describe('tunedCount', () => {
  it('is max(2k, floor(n·ratio)) capped at n', () => {
    expect(tunedCount(32, 0.5625, 6)).toBe(18); // reference heads
    expect(tunedCount(11008, 0.465, 2064)).toBe(5118); // floor(5118.72)
    expect(tunedCount(8, 0.1, 2)).toBe(4); // 2k wins
    expect(tunedCount(8, 1, 2)).toBe(8);
  });
});

describe('selectUnits', () => {
  const scores = [3, 1, 4, 1, 5, 9, 2, 6];

  it('takes P by (score desc, index asc) and N by (score asc, index asc) among the rest', () => {
    const s = selectUnits(scores, 2);
    expect(list(s.P)).toEqual([5, 7]);
    expect(list(s.N)).toEqual([1, 3]);
    expect(list(s.E)).toEqual([]);
  });

  it('breaks score ties by index', () => {
    const s = selectUnits([2, 2, 2, 2, 1, 1], 2);
    expect(list(s.P)).toEqual([0, 1]);
    expect(list(s.N)).toEqual([4, 5]);
    const flat = selectUnits([0, 0, 0, 0, 0], 2);
    expect(list(flat.P)).toEqual([0, 1]);
    expect(list(flat.N)).toEqual([2, 3]);
  });

  it('fills E with the next-lowest units after N', () => {
    const s = selectUnits(scores, 2, { tunedTotal: 6 });
    expect(list(s.N)).toEqual([1, 3]);
    expect(list(s.E)).toEqual([6, 0]);
    expect(list(selectUnits(scores, 2, { tunedTotal: 100 }).E)).toEqual([6, 0, 2, 4]);
  });

  it('excludes earlier N units from P and N and keeps them directly tuned at the head of E (decaying K)', () => {
    const s = selectUnits(scores, 2, { exclude: [3, 1], tunedTotal: 7 });
    expect(list(s.P)).toEqual([5, 7]);
    expect(list(s.N)).toEqual([6, 0]);
    // the earlier N units by (score asc, index asc), then the pool's next-lowest after N
    expect(list(s.E)).toEqual([1, 3, 2]);
    // kept even where they alone exceed the tuned total
    expect(list(selectUnits(scores, 2, { exclude: [1, 3], tunedTotal: 4 }).E)).toEqual([1, 3]);
    // without a tuned total (operators, full) there is no E at all
    expect(list(selectUnits(scores, 2, { exclude: [1, 3] }).E)).toEqual([]);
  });

  it('shrinks k when the pool is too small', () => {
    const s = selectUnits([1, 2, 3, 4], 2, { exclude: [0] });
    expect(list(s.P)).toEqual([3]);
    expect(list(s.N)).toEqual([1]);
  });

  it('reverse swaps P and N and keeps E', () => {
    const s = selectUnits(scores, 2, { reverse: true, tunedTotal: 6 });
    expect(list(s.P)).toEqual([1, 3]);
    expect(list(s.N)).toEqual([5, 7]);
    expect(list(s.E)).toEqual([6, 0]);
  });

  it('refuses non-finite scores', () => {
    expect(() => selectUnits([1, Number.NaN, 2, 3], 1)).toThrow(UsageError);
  });
});

describe('selectModel', () => {
  const layer = (headRank: number[], chRank: number[], headAvg?: number[], chAvg?: number[]): LayerScoreInput => ({
    heads: { rank: headRank, ...(headAvg ? { avg: headAvg } : {}) },
    channels: { rank: chRank, ...(chAvg ? { avg: chAvg } : {}) },
  });
  // 4 head units (k = 1 by the min-one-pair rule), 8 channels (k = floor(8·0.375/2) = 1).
  const layers = [
    layer([0, 3, -2, 1], [3, 1, 4, 1, 5, 9, 2, 6], [0.5, 0.1, 0.9, 0.3], [1, 2, 3, 4, 5, 6, 7, 8]),
    layer([1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, -1], [1, 2, 3, 4], [8, 7, 6, 5, 4, 3, 2, 1]),
  ];

  it('selects per layer with rank scores', () => {
    const sel = selectModel(layers, { stage: 1 });
    expect(sel.map((s) => [s.headK, s.channelK])).toEqual([[1, 1], [1, 1]]);
    expect(list(sel[0]!.heads.P)).toEqual([1]);
    expect(list(sel[0]!.heads.N)).toEqual([2]);
    expect(list(sel[0]!.channels.P)).toEqual([5]);
    expect(list(sel[0]!.channels.N)).toEqual([1]);
    expect(list(sel[1]!.heads.P)).toEqual([0]);
    expect(list(sel[1]!.heads.N)).toEqual([1]);
    expect(list(sel[1]!.channels.P)).toEqual([0]);
    expect(list(sel[1]!.channels.N)).toEqual([7]);
  });

  it('uses the averaged norms with score = avg', () => {
    const sel = selectModel(layers, { stage: 1, score: 'avg' });
    expect([list(sel[0]!.heads.P), list(sel[0]!.heads.N)]).toEqual([[2], [1]]);
    expect([list(sel[1]!.channels.P), list(sel[1]!.channels.N)]).toEqual([[0], [7]]);
    expect(() => selectModel([layer([0, 1], [0, 1])], { stage: 1, score: 'avg' })).toThrow(UsageError);
  });

  it('decaying K: s = stage and earlier N excluded', () => {
    const big = [layer(Array.from({ length: 32 }, (_, i) => i), Array.from({ length: 16 }, (_, i) => -i))];
    const s2 = selectModel(big, { stage: 2, decayK: true, excluded: [{ heads: [0, 1] }] });
    expect(s2[0]!.headK).toBe(3); // floor(32·0.375/4)
    expect(list(s2[0]!.heads.P)).toEqual([31, 30, 29]);
    expect(list(s2[0]!.heads.N)).toEqual([2, 3, 4]);
    // Without decayK the exclusion list is ignored and s = 1.
    const plain = selectModel(big, { stage: 2, excluded: [{ heads: [0, 1] }] });
    expect(plain[0]!.headK).toBe(6);
    expect(list(plain[0]!.heads.N)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('random selection shuffles the scores with one seeded stream, layer by layer, heads first', () => {
    const a = selectModel(layers, { stage: 1, randomSeed: 42 });
    const b = selectModel(layers, { stage: 1, randomSeed: 42 });
    expect(a).toEqual(b);
    const rng = new Rng(42);
    for (const [i, l] of layers.entries()) {
      const h = rng.shuffle(Array.from(l.heads.rank));
      const c = rng.shuffle(Array.from(l.channels.rank));
      expect(a[i]!.heads).toEqual(selectUnits(h, 1));
      expect(a[i]!.channels).toEqual(selectUnits(c, 1));
    }
  });

  it('random selection draws a new permutation at every stage (stage 1 from the seed itself), not the same one again', () => {
    // One layer of 64 channels and 16 heads, identical scores at every stage: what changes is the shuffle.
    const wide = [{ heads: { rank: Float32Array.from({ length: 16 }, (_, i) => i) }, channels: { rank: Float32Array.from({ length: 64 }, (_, i) => i) } }];
    const at = (stage: number, seed = 7) => selectModel(wide, { stage, randomSeed: seed, ratio: 0.5 })[0]!;
    expect(at(2)).toEqual(at(2));
    expect(list(at(2).channels.P)).not.toEqual(list(at(1).channels.P));
    expect(list(at(3).channels.P)).not.toEqual(list(at(2).channels.P));
    // Stage n of seed s uses the generator randomSelectionSeed(s, n); stage 1 is Rng(s), as before.
    const rng = new Rng(randomSelectionSeed(7, 2));
    const h = rng.shuffle(Array.from(wide[0]!.heads.rank));
    const c = rng.shuffle(Array.from(wide[0]!.channels.rank));
    expect(at(2).heads).toEqual(selectUnits(h, 4));
    expect(at(2).channels).toEqual(selectUnits(c, 16));
    expect(randomSelectionSeed(7, 1)).toBe(7);
    expect(new Set([1, 2, 3, 4].map((n) => randomSelectionSeed(7, n))).size).toBe(4);
  });

  it('reverse and tuned ratios pass through', () => {
    const sel = selectModel(layers, { stage: 1, reverse: true, tunedAttnRatio: 0.75, tunedFfnRatio: 0.5 });
    expect(list(sel[0]!.heads.P)).toEqual([2]);
    expect(list(sel[0]!.heads.N)).toEqual([1]);
    expect(list(sel[0]!.heads.E)).toEqual([0]); // total floor(4·0.75) = 3: N, P and one more
    expect(list(sel[0]!.channels.E)).toEqual([3, 6]); // total 4 of 8
  });
});
