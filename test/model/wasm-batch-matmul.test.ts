// apex's wasm BatchMatMul (wasm-batch-matmul.ts: batched and transposed products through
// XNNPACK instead of tfjs-wasm's naive loop) against the cpu backend's products: every case of
// transposition and batch broadcasting, values and gradients, and no buffers left behind.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { preferXnnpack } from '../../src/model/wasm-batch-matmul.js';
import { Rng } from '../../src/util/rng.js';

const rng = new Rng(11);
const values = (shape: number[]) => Float32Array.from({ length: shape.reduce((p, d) => p * d, 1) }, () => rng.next() * 2 - 1);

/** Relative max difference of two arrays. */
function relDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0;
  let m = 1e-12;
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs(x[i]! - y[i]!));
    m = Math.max(m, Math.abs(y[i]!));
  }
  return d / m;
}

/**
 * The product and the gradients of Σ(product ⊙ R) for a and b, on the current backend.
 * `explicit`: broadcast the operands' batch dimensions with broadcastTo first (tfjs's own
 * BatchMatMul gradient, which the cpu backend runs, does not reduce over broadcast batches;
 * broadcastTo's gradient does).
 */
function productAndGrads(sa: number[], sb: number[], ta: boolean, tb: boolean, av: Float32Array, bv: Float32Array, rv: Float32Array, explicit = false) {
  return tf.tidy(() => {
    const a = tf.tensor(av, sa);
    const b = tf.tensor(bv, sb);
    const batch = tf.broadcast_util.assertAndGetBroadcastShape(sa.slice(0, -2), sb.slice(0, -2));
    const wide = (x: tf.Tensor, s: number[]) => (explicit ? tf.broadcastTo(x, [...batch, ...s.slice(-2)]) : x);
    const product = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(wide(x, sa), wide(y, sb), ta, tb);
    const out = product(a, b);
    const r = tf.tensor(rv, out.shape);
    const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(product(x, y), r)))([a, b]);
    return { shape: out.shape, out: out.dataSync().slice(), ga: ga!.dataSync().slice(), gb: gb!.dataSync().slice() };
  });
}

// Large enough for XNNPACK (preferXnnpack), except the first two, which keep tfjs's loop.
const CASES: [number[], number[], boolean, boolean][] = [
  [[3, 5, 7], [3, 7, 4], false, false],
  [[2, 4, 2, 8], [2, 4, 12, 8], false, true],
  [[48, 64], [48, 40], true, false],
  [[64, 48], [40, 48], false, true],
  [[48, 64], [40, 48], true, true],
  [[3, 64, 48], [3, 48, 40], false, false],
  // attention: Q·Kᵀ and P·V over [batch, kv heads, …]
  [[2, 2, 64, 32], [2, 2, 48, 32], false, true],
  [[2, 2, 64, 48], [2, 2, 48, 32], false, false],
  [[2, 2, 32, 64], [2, 2, 32, 48], true, false],
  // one side unbatched (broadcast)
  [[3, 64, 48], [48, 40], false, false],
  [[3, 48, 64], [40, 48], true, true],
  [[64, 48], [3, 48, 40], false, false],
  [[2, 1, 64, 48], [48, 40], false, false],
  [[1, 1, 64, 48], [3, 48, 40], false, false],
];

describe('wasm BatchMatMul through XNNPACK', () => {
  for (const [sa, sb, ta, tb] of CASES) {
    it(`[${sa}]${ta ? 'ᵀ' : ''} · [${sb}]${tb ? 'ᵀ' : ''} equals the cpu backend, values and gradients`, async () => {
      const av = values(sa);
      const bv = values(sb);
      await selectBackend('cpu');
      const outShape = tf.tidy(() => tf.matMul(tf.zeros(sa), tf.zeros(sb), ta, tb).shape);
      const rv = values(outShape);
      const ref = productAndGrads(sa, sb, ta, tb, av, bv, rv, true);
      await selectBackend('wasm');
      const got = productAndGrads(sa, sb, ta, tb, av, bv, rv);
      expect(got.shape).toEqual(ref.shape);
      expect(relDiff(got.out, ref.out)).toBeLessThan(1e-6);
      expect(relDiff(got.ga, ref.ga)).toBeLessThan(1e-6);
      expect(relDiff(got.gb, ref.gb)).toBeLessThan(1e-6);
    });
  }

  it('leaves no buffers behind in the backend', async () => {
    await selectBackend('wasm');
    const a = tf.tensor(values([2, 4, 24, 8]), [2, 4, 24, 8]);
    const b = tf.tensor(values([2, 4, 12, 8]), [2, 4, 12, 8]);
    const c = tf.tensor(values([8, 3]), [8, 3]);
    const run = () => tf.tidy(() => {
      tf.matMul(a, b, false, true).dataSync();
      tf.matMul(a, c).dataSync();
      tf.matMul(b, b, true, false).dataSync();
    });
    run();
    const before = tf.engine().backend.numDataIds();
    for (let i = 0; i < 3; i++) run();
    expect(tf.engine().backend.numDataIds()).toBe(before);
    tf.dispose([a, b, c]);
  });

  it('keeps tfjs\'s loop for small products with few rows and large right matrices', () => {
    // Training attention (2 × 128 tokens, 8 heads over 4 KV heads of 32): XNNPACK.
    expect(preferXnnpack(8, 256, 32, 128, false, true)).toBe(true);
    expect(preferXnnpack(8, 256, 128, 32, false, false)).toBe(true);
    // Generating one token, 2 query rows per KV head against 2048 cached positions: Q·Kᵀ and
    // P·V stay with the loop (≈ 1 ns per multiply-add there).
    expect(preferXnnpack(32, 2, 64, 2048, false, true)).toBe(false);
    expect(preferXnnpack(32, 2, 2048, 64, false, false)).toBe(false);
    // … but not a loop over an untransposed right matrix of 2048 columns (≈ 3 ns per multiply-add).
    expect(preferXnnpack(32, 2, 64, 2048, false, false)).toBe(true);
    expect(preferXnnpack(32, 2, 8, 8, false, false)).toBe(false);
    // One right matrix shared by a batch: packed once.
    expect(preferXnnpack(16, 64, 48, 40, true, false)).toBe(true);
  });

  it('still reports mismatched inner dimensions', async () => {
    await selectBackend('wasm');
    const a = tf.zeros([2, 3, 4]);
    const b = tf.zeros([2, 5, 6]);
    expect(() => tf.matMul(a, b)).toThrow(/inner shapes/);
    tf.dispose([a, b]);
  });
});
