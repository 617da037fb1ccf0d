import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { monarchApply, monarchBlocks, monarchDense, monarchIsZero, monarchMultiply, monarchParamCount } from '../../src/ops/monarch.js';
import { monarchApplyTf } from '../../src/ops/monarch-tf.js';
import { Rng } from '../../src/util/rng.js';
import { denseMonarch, matvec, maxAbs, maxAbsDiff, monarchFactorsDense, randomArray } from './dense-reference.js';

/** The definition, literally: the divisor of n closest to √n, ties → the smaller. */
function closestDivisor(n: number): number {
  let best = 0;
  for (let d = 1; d <= n; d++) {
    if (n % d !== 0) continue;
    if (best === 0 || Math.abs(d - Math.sqrt(n)) < Math.abs(best - Math.sqrt(n))) best = d;
  }
  return best;
}

describe('monarchBlocks', () => {
  it('matches the closest-divisor definition for n = 1..2100', () => {
    for (let n = 1; n <= 2100; n++) {
      const { nb, bs } = monarchBlocks(n);
      expect(nb).toBe(closestDivisor(n));
      expect(nb * bs).toBe(n);
    }
  });

  it('gives the documented layouts', () => {
    expect(monarchBlocks(66)).toEqual({ nb: 6, bs: 11 });
    expect(monarchBlocks(768)).toEqual({ nb: 24, bs: 32 });
    expect(monarchBlocks(2064)).toEqual({ nb: 43, bs: 48 });
    expect(monarchBlocks(16)).toEqual({ nb: 4, bs: 4 });
    expect(monarchBlocks(7)).toEqual({ nb: 1, bs: 7 });
    expect(() => monarchBlocks(0)).toThrow(RangeError);
  });

  it('counts 2·n²/nb parameters', () => {
    expect(monarchParamCount(66)).toBe(1452); // 2·66²/6
    expect(monarchParamCount(768)).toBe(49152); // 2·768²/24
    expect(monarchParamCount(2064)).toBe(198144); // 2·2064²/43
    for (const n of [1, 12, 66, 100, 768, 2064]) expect(monarchParamCount(n)).toBe((2 * n * n) / monarchBlocks(n).nb);
  });
});

describe('Monarch product', () => {
  // n = 4, nb = bs = 2; y worked out by hand through the four steps of §3.
  const B1 = Float32Array.of(1, 2, 3, 4, /* block 1 */ 5, 6, 7, 8);
  const B2 = Float32Array.of(1, 1, 0, 1, /* block 1 */ 2, 0, 1, 1);

  it('follows the four steps on a hand-computed example', () => {
    // x = e0: u = [1,3,0,0]; v0 = [1,0], v1 = [3,0]; w = [1,0,6,3]; y = [1,6,0,3]
    expect(Array.from(monarchApply(B1, B2, Float32Array.of(1, 0, 0, 0), 4))).toEqual([1, 6, 0, 3]);
    // x = [1,2,3,4]: u = [5,11,39,53]; v0 = [5,39], v1 = [11,53]; w = [44,39,22,64]; y = [44,22,39,64]
    expect(Array.from(monarchApply(B1, B2, Float32Array.of(1, 2, 3, 4), 4))).toEqual([44, 22, 39, 64]);
  });

  it('equals Perm′·BD2·Perm·BD1 built from explicit matrices (n = 66, 768; nb ≠ bs)', () => {
    const rng = new Rng(7);
    for (const n of [66, 768]) {
      const { nb, bs } = monarchBlocks(n);
      const b1 = randomArray(rng, nb * bs * bs);
      const b2 = randomArray(rng, nb * bs * bs);
      const ref = denseMonarch(b1, b2, nb, bs);
      expect(maxAbsDiff(monarchDense(b1, b2, n), ref.v)).toBeLessThan(1e-12 * maxAbs(ref.v));
      const cols = 3;
      const X = randomArray(rng, n * cols);
      const Y = monarchMultiply(b1, b2, n, X, cols);
      for (let c = 0; c < cols; c++) {
        const x = Float64Array.from({ length: n }, (_, i) => X[i * cols + c]!);
        const y = matvec(ref, x);
        const got = Float64Array.from({ length: n }, (_, i) => Y[i * cols + c]!);
        expect(maxAbsDiff(got, y)).toBeLessThan(1e-12 * maxAbs(y));
        expect(maxAbsDiff(monarchApply(b1, b2, x, n), y)).toBeLessThan(1e-6 * maxAbs(y));
      }
    }
  });

  it('equals the explicit factor chain on random vectors at n = 2064 (nb = 43, bs = 48)', () => {
    const rng = new Rng(11);
    const n = 2064;
    const { nb, bs } = monarchBlocks(n);
    const b1 = randomArray(rng, nb * bs * bs);
    const b2 = randomArray(rng, nb * bs * bs);
    const [perm2, bd2, perm1, bd1] = monarchFactorsDense(b1, b2, nb, bs);
    for (let t = 0; t < 2; t++) {
      const x = randomArray(rng, n);
      const y = matvec(perm2!, matvec(bd2!, matvec(perm1!, matvec(bd1!, x))));
      expect(maxAbsDiff(monarchMultiply(b1, b2, n, x, 1), y)).toBeLessThan(1e-12 * maxAbs(y));
    }
  });

  it('is zero when a factor is zero', () => {
    const zero = new Float32Array(8);
    expect(monarchIsZero(B1, zero)).toBe(true);
    expect(monarchIsZero(zero, B2)).toBe(true);
    expect(monarchIsZero(B1, B2)).toBe(false);
    expect(Array.from(monarchApply(B1, zero, Float32Array.of(1, 2, 3, 4), 4))).toEqual([0, 0, 0, 0]);
  });

  it('rejects factors of the wrong size', () => {
    expect(() => monarchApply(new Float32Array(7), B2, new Float32Array(4), 4)).toThrow(RangeError);
  });
});

describe('monarchApplyTf', () => {
  it('maps each row x to M·x (Y = X·Mᵀ) for n = 66 and n = 4', () => {
    const rng = new Rng(3);
    for (const n of [4, 66]) {
      const { nb, bs } = monarchBlocks(n);
      const b1 = randomArray(rng, nb * bs * bs);
      const b2 = randomArray(rng, nb * bs * bs);
      const ref = denseMonarch(b1, b2, nb, bs);
      const rows = 5;
      const X = randomArray(rng, rows * n);
      const Y = tf.tidy(() => monarchApplyTf(tf.tensor3d(b1, [nb, bs, bs]), tf.tensor3d(b2, [nb, bs, bs]), tf.tensor2d(X, [rows, n])).dataSync());
      for (let r = 0; r < rows; r++) {
        const y = matvec(ref, X.subarray(r * n, (r + 1) * n));
        expect(maxAbsDiff(Y.subarray(r * n, (r + 1) * n), y)).toBeLessThan(1e-5 * Math.max(1, maxAbs(y)));
      }
    }
  });
});
