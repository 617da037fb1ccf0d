import { Matrix, SingularValueDecomposition } from 'ml-matrix';
import { describe, expect, it } from 'vitest';
import { effectiveRank, effectiveRankFromSingularValues, singularValues } from '../../src/ops/effective-rank.js';
import { Rng } from '../../src/util/rng.js';
import { maxAbsDiff, randomArray } from './dense-reference.js';

const entropyRank = (p: number[]) => Math.exp(-p.reduce((s, x) => s + (x > 0 ? x * Math.log(x) : 0), 0));

describe('effective rank', () => {
  it('identity of size n has effective rank n', () => {
    for (const n of [1, 5, 40]) {
      const I = new Float32Array(n * n);
      for (let i = 0; i < n; i++) I[i * n + i] = 1;
      expect(effectiveRank(I, n, n)).toBeCloseTo(n, 10);
    }
  });

  it('a rank-1 matrix has effective rank 1', () => {
    const u = [1, -2, 3, 0.5, 4, -1];
    const v = [2, 1, -1, 3];
    const W = Float64Array.from({ length: 24 }, (_, i) => u[Math.floor(i / 4)]! * v[i % 4]!);
    expect(effectiveRank(W, 6, 4)).toBeCloseTo(1, 10);
    const Wt = Float64Array.from({ length: 24 }, (_, i) => v[Math.floor(i / 6)]! * u[i % 6]!); // the transpose, 4×6
    expect(effectiveRank(Wt, 4, 6)).toBeCloseTo(1, 10);
  });

  it('diag(3, 1) and diag(1, 1, 2) by hand', () => {
    expect(effectiveRank(Float32Array.of(3, 0, 0, 1), 2, 2)).toBeCloseTo(entropyRank([0.75, 0.25]), 12); // 1.7548…
    expect(entropyRank([0.75, 0.25])).toBeCloseTo(1.75476535060, 10);
    // 3×3 diag with a zero row appended: σ = (2, 1, 1), p = (0.5, 0.25, 0.25) → exp(1.5·ln 2) = 2√2
    expect(effectiveRank(Float32Array.of(1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0), 4, 3)).toBeCloseTo(2 * Math.SQRT2, 12);
    expect(effectiveRankFromSingularValues([0, 0])).toBe(0);
    expect(effectiveRank(new Float32Array(6), 2, 3)).toBe(0);
  });

  it('singular values of [[3, 0], [4, 5]] are 3√5 and √5', () => {
    const s = singularValues(Float32Array.of(3, 0, 4, 5), 2, 2);
    expect(s[0]).toBeCloseTo(3 * Math.sqrt(5), 12);
    expect(s[1]).toBeCloseTo(Math.sqrt(5), 12);
  });

  it('agrees with ml-matrix on random tall and wide matrices', () => {
    const rng = new Rng(8);
    for (const [r, c] of [[37, 23], [23, 37], [64, 64]] as const) {
      const W = randomArray(rng, r * c);
      const ref = new SingularValueDecomposition(new Matrix(Array.from({ length: r }, (_, i) => Array.from(W.subarray(i * c, (i + 1) * c)))), {
        computeLeftSingularVectors: false, computeRightSingularVectors: false, autoTranspose: true,
      }).diagonal;
      const mine = singularValues(W, r, c);
      expect(maxAbsDiff(mine, ref)).toBeLessThan(1e-12);
      expect(effectiveRank(W, r, c)).toBeCloseTo(effectiveRankFromSingularValues(ref), 10);
    }
  });

  it('refuses NaN', () => {
    expect(() => singularValues(Float32Array.of(1, Number.NaN), 1, 2)).toThrow(RangeError);
  });
});
