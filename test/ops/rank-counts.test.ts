import { describe, expect, it } from 'vitest';
import { InputError, VerificationError } from '../../src/errors.js';
import { Rng } from '../../src/util/rng.js';
import { RankCountRecorder, groupHeadNorms, minK, rankCounts, spread, topK } from '../../src/ops/rank-counts.js';

const close = (got: ArrayLike<number>, want: number[]) => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i]).toBeCloseTo(w, 12));
};

describe('unit norms and counts', () => {
  it('groups query heads into KV groups by h // (H/nKv)', () => {
    close(groupHeadNorms([1, 3, 4, 5], 2), [2, 3]); // sqrt(1+3), sqrt(4+5)
    close(groupHeadNorms([1, 3, 4, 5, 0, 16], 3), [2, 3, 4]);
    close(groupHeadNorms([4, 9], 2), [2, 3]); // MHA: one head per group
    expect(() => groupHeadNorms([1, 2, 3], 2)).toThrow(RangeError);
  });

  it('counts +1 for Top-k and −1 for Min-k', () => {
    expect(Array.from(rankCounts([0.5, 2, 1, 2, 0.1], 2))).toEqual([-1, 1, 0, 1, -1]);
  });

  it('breaks ties inside a micro-batch by lower index for both Top-k and Min-k', () => {
    expect(topK([1, 1, 0, 2], 2)).toEqual([3, 0]);
    expect(minK([1, 1, 0, 2], 2)).toEqual([2, 0]);
    expect(Array.from(rankCounts([1, 1, 0, 2], 2))).toEqual([0, 0, -1, 1]);
    // All equal: unit 0 is both the top and the min unit.
    expect(Array.from(rankCounts([1, 1, 1, 1], 1))).toEqual([0, 0, 0, 0]);
    expect(Array.from(rankCounts([3, 3, 1, 1], 1))).toEqual([1, 0, -1, 0]);
  });

  it('refuses NaN norms', () => {
    expect(() => rankCounts([1, Number.NaN, 2], 1)).toThrow(VerificationError);
  });

  it('equals +1 on topK and −1 on minK (the sorted-index definition) for random norms with many ties', () => {
    const rng = new Rng(17);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rng.next() * 40);
      const levels = 1 + Math.floor(rng.next() * 6); // few distinct values: ties at the thresholds
      const norms = Float64Array.from({ length: n }, () => Math.floor(rng.next() * levels) / levels);
      for (const k of [0, 1, Math.floor(n / 3), Math.floor(n / 2), n, n + 2]) {
        const want = new Int32Array(n);
        for (const u of topK(norms, k)) want[u]! += 1;
        for (const u of minK(norms, k)) want[u]! -= 1;
        expect(Array.from(rankCounts(norms, k)), `n=${n} k=${k} norms=${Array.from(norms).join(',')}`).toEqual(Array.from(want));
      }
    }
  });

  it('computes population std and CV', () => {
    const s = spread([1.5, 4]);
    expect(s.mean).toBeCloseTo(2.75, 12);
    expect(s.std).toBeCloseTo(1.25, 12);
    expect(s.cv).toBeCloseTo(1.25 / 2.75, 12);
    expect(spread([0, 0])).toEqual({ mean: 0, std: 0, cv: 0 });
  });
});

describe('RankCountRecorder', () => {
  const shape = { numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 6, headK: 1, channelK: 2 };
  const filled = () => {
    const rec = new RankCountRecorder(shape);
    // micro-batch 1: groups sqrt(1+3)=2, sqrt(4+5)=3; channels 1..6
    rec.record(0, [1, 3, 4, 5], [1, 4, 9, 16, 25, 36]);
    // micro-batch 2: groups sqrt(0+1)=1, sqrt(16+9)=5; channels all 0 (ties: unit 0,1 both top and min)
    rec.record(0, [0, 1, 16, 9], [0, 0, 0, 0, 0, 0]);
    rec.record(1, [4, 0, 0, 1], [0, 1, 0, 1, 0, 1]);
    return rec;
  };

  it('sums counts and averages norms over micro-batches', () => {
    const rec = filled();
    expect(rec.microBatches(0)).toBe(2);
    expect(Array.from(rec.headScores(0))).toEqual([-2, 2]);
    expect(Array.from(rec.channelScores(0))).toEqual([-1, -1, 0, 0, 1, 1]);
    close(rec.headUnitNormAvg(0), [1.5, 4]);
    close(rec.headNormAvg(0), [0.5, (Math.sqrt(3) + 1) / 2, 3, (Math.sqrt(5) + 3) / 2]);
    close(rec.channelNormAvg(0), [0.5, 1, 1.5, 2, 2.5, 3]);
    // layer 1: groups 2, 1 → [+1, −1]; channels [0,1,0,1,0,1]: top {1,3}, min {0,2}
    expect(Array.from(rec.headScores(1))).toEqual([1, -1]);
    expect(Array.from(rec.channelScores(1))).toEqual([-1, 1, -1, 1, 0, 0]);
  });

  it('reports std and CV of the averaged unit norms', () => {
    const d = filled().diagnostics(0);
    expect(d.heads.std).toBeCloseTo(1.25, 12);
    expect(d.heads.cv).toBeCloseTo(1.25 / 2.75, 12);
    // channels 0.5..3 step 0.5: mean 1.75, variance 4.375/6
    expect(d.channels.mean).toBeCloseTo(1.75, 12);
    expect(d.channels.std).toBeCloseTo(Math.sqrt(4.375 / 6), 12);
    expect(d.channels.cv).toBeCloseTo(Math.sqrt(4.375 / 6) / 1.75, 12);
  });

  it('round-trips its state through JSON and keeps counting', () => {
    const rec = filled();
    const back = RankCountRecorder.fromState(JSON.parse(JSON.stringify(rec.state())));
    expect(back.state()).toEqual(rec.state());
    back.record(0, [1, 3, 4, 5], [1, 4, 9, 16, 25, 36]);
    expect(Array.from(back.headScores(0))).toEqual([-3, 3]);
    expect(back.microBatches(0)).toBe(3);
  });

  it('rejects inconsistent states and inputs', () => {
    const st = filled().state();
    expect(() => RankCountRecorder.fromState({ ...st, headCounts: [1] })).toThrow(InputError);
    expect(() => RankCountRecorder.fromState({ ...st, channelCounts: st.channelCounts.map(() => 0.5) })).toThrow(InputError);
    expect(() => RankCountRecorder.fromState({ ...st, version: 2 } as unknown as typeof st)).toThrow(InputError);
    const rec = new RankCountRecorder(shape);
    expect(() => rec.record(2, [1, 1, 1, 1], [1, 1, 1, 1, 1, 1])).toThrow(RangeError);
    expect(() => rec.record(0, [1, 1, 1], [1, 1, 1, 1, 1, 1])).toThrow(RangeError);
    expect(() => new RankCountRecorder({ ...shape, headK: 2 })).toThrow(RangeError);
  });
});
