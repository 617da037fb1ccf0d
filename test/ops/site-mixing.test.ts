// Both routes of a mixing site (the JavaScript kernels on cpu/wasm, the tfjs-ops route other
// backends take) against plain autodiff of §3's rule written with gather and concat: values
// and the gradients of W, M (or Mᵀ), a and b.
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { lineSet } from '../../src/ops/line-moves.js';
import { mixColumns, mixRows, type SiteLines } from '../../src/ops/site-mixing.js';
import { Rng } from '../../src/util/rng.js';
import { maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

const rng = new Rng(17);
const t2 = (r: number, c: number) => tf.tensor2d(randomArray(rng, r * c), [r, c]);
const t1 = (n: number) => tf.tensor1d(randomArray(rng, n, 0.5, 1));

function site(P: number[], N: number[], axis: 0 | 1, extent: number): SiteLines {
  return { P: lineSet(Int32Array.from(P), axis, extent), N: lineSet(Int32Array.from(N), axis, extent), both: lineSet(Int32Array.from([...P, ...N]), axis, extent) };
}

/** W with the lines `at` (axis) replaced by `updates`, by gather over concat (autodiff). */
function replaced(W: tf.Tensor2D, at: number[], updates: tf.Tensor2D, axis: 0 | 1): tf.Tensor2D {
  const extent = W.shape[axis];
  const from = Array.from({ length: extent }, (_, c) => (at.includes(c) ? extent + at.indexOf(c) : c));
  return tf.gather(tf.concat([W, updates], axis), from, axis) as tf.Tensor2D;
}

/** §3, output side: W[N] ← a·W[N] + M·W[P], W[P] ← b·W[P]. */
function rowsRule(W: tf.Tensor2D, P: number[], N: number[], M: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  const WP = tf.gather(W, P, 0) as tf.Tensor2D;
  const WN = tf.gather(W, N, 0) as tf.Tensor2D;
  const newN = tf.add(tf.mul(WN, tf.reshape(a, [-1, 1])), tf.matMul(M, WP)) as tf.Tensor2D;
  const newP = tf.mul(WP, tf.reshape(b, [-1, 1])) as tf.Tensor2D;
  return replaced(W, [...P, ...N], tf.concat([newP, newN], 0) as tf.Tensor2D, 0);
}

/** §3, input side per slot s: W[:, N_s] ← W[:, N_s]·a + W[:, P_s]·Mᵀ (Mt = Mᵀ). */
function columnsRule(W: tf.Tensor2D, P: number[], N: number[], slots: number, Mt: tf.Tensor2D, a: tf.Tensor1D): tf.Tensor2D {
  const n = a.shape[0];
  const parts: tf.Tensor2D[] = [];
  for (let s = 0; s < slots; s++) {
    const WP = tf.gather(W, P.slice(s * n, (s + 1) * n), 1) as tf.Tensor2D;
    const WN = tf.gather(W, N.slice(s * n, (s + 1) * n), 1) as tf.Tensor2D;
    parts.push(tf.add(tf.mul(WN, tf.reshape(a, [1, -1])), tf.matMul(WP, Mt)) as tf.Tensor2D);
  }
  return replaced(W, N, tf.concat(parts, 1) as tf.Tensor2D, 1);
}

function compare(f: (xs: tf.Tensor[]) => tf.Tensor2D, g: (xs: tf.Tensor[]) => tf.Tensor2D, xs: tf.Tensor[]): { value: number; grads: number[] } {
  const R = tf.randomNormal(f(xs).shape, 0, 1, 'float32', 3);
  const outF = f(xs).dataSync();
  const outG = g(xs).dataSync();
  const gf = tf.grads((...v: tf.Tensor[]) => tf.sum(tf.mul(f(v), R)))(xs).map((x) => x.dataSync());
  const gg = tf.grads((...v: tf.Tensor[]) => tf.sum(tf.mul(g(v), R)))(xs).map((x) => x.dataSync());
  return { value: maxAbsDiff(outF, outG) / maxAbs(outG), grads: gf.map((x, i) => maxAbsDiff(x, gg[i]!) / Math.max(maxAbs(gg[i]!), 1e-12)) };
}

for (const backend of ['cpu', 'wasm'] as const) {
  for (const portable of [false, true]) {
    describe(`mixing sites on ${backend}, ${portable ? 'tfjs-ops route' : 'JavaScript kernels'}`, () => {
      beforeAll(async () => {
        await selectBackend(backend);
      });

      // Rows of 6 values take the JavaScript loops, rows of 8 and 12 the SIMD passes on wasm (row-simd.ts).
      for (const width of [6, 8, 12]) {
        it(`rows of ${width}: values and the gradients of W, M, a, b equal autodiff of the rule`, () => {
          const P = [5, 0, 7];
          const N = [2, 9, 4];
          const s = site(P, N, 0, 10);
          const res = tf.tidy(() => compare(
            ([W, M, a, b]) => mixRows(W as tf.Tensor2D, s, M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D, { portable }),
            ([W, M, a, b]) => rowsRule(W as tf.Tensor2D, P, N, M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D),
            [t2(10, width), t2(3, 3), t1(3), t1(3)],
          ));
          expect(res.value).toBeLessThan(1e-6);
          for (const g of res.grads) expect(g).toBeLessThan(1e-5);
        });
      }

      it('leaves no buffers behind in the backend (the kernels free their temporaries)', () => {
        const rows = site([5, 0], [2, 9], 0, 10);
        const columns = site([1, 6, 8, 11], [3, 0, 10, 5], 1, 12);
        const inputs = [t2(10, 6), t2(2, 2), t1(2), t1(2), t2(5, 12)];
        const run = () => tf.tidy(() => {
          const [W, M, a, b, V] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D, tf.Tensor2D];
          const g = tf.grads((w: tf.Tensor, m: tf.Tensor, av: tf.Tensor, bv: tf.Tensor, v: tf.Tensor) =>
            tf.add(tf.sum(mixRows(w as tf.Tensor2D, rows, m as tf.Tensor2D, av as tf.Tensor1D, bv as tf.Tensor1D, { portable })), tf.sum(mixColumns(v as tf.Tensor2D, columns, 2, m as tf.Tensor2D, av as tf.Tensor1D, { portable }))));
          g([W, M, a, b, V]).forEach((x) => x.dataSync());
        });
        run();
        const before = tf.engine().backend.numDataIds();
        for (let i = 0; i < 5; i++) run();
        expect(tf.engine().backend.numDataIds()).toBe(before);
        tf.dispose(inputs);
      });

      it('a one-line operator (n = 1, as for one attention head): rows, and columns in two slots', () => {
        const rows = site([3], [1], 0, 6);
        const r = tf.tidy(() => compare(
          ([W, M, a, b]) => mixRows(W as tf.Tensor2D, rows, M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D, { portable }),
          ([W, M, a, b]) => rowsRule(W as tf.Tensor2D, [3], [1], M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D),
          [t2(6, 4), t2(1, 1), t1(1), t1(1)],
        ));
        const columns = site([0, 5], [2, 3], 1, 6);
        const c = tf.tidy(() => compare(
          ([W, Mt, a]) => mixColumns(W as tf.Tensor2D, columns, 2, Mt as tf.Tensor2D, a as tf.Tensor1D, { portable }),
          ([W, Mt, a]) => columnsRule(W as tf.Tensor2D, [0, 5], [2, 3], 2, Mt as tf.Tensor2D, a as tf.Tensor1D),
          [t2(4, 6), t2(1, 1), t1(1)],
        ));
        // A bias as a one-column weight ([width, 1], as transformBias passes it).
        const b1 = tf.tidy(() => compare(
          ([W, M, a, b]) => mixRows(W as tf.Tensor2D, rows, M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D, { portable }),
          ([W, M, a, b]) => rowsRule(W as tf.Tensor2D, [3], [1], M as tf.Tensor2D, a as tf.Tensor1D, b as tf.Tensor1D),
          [t2(6, 1), t2(1, 1), t1(1), t1(1)],
        ));
        for (const res of [r, c, b1]) {
          expect(res.value).toBeLessThan(1e-6);
          for (const g of res.grads) expect(g).toBeLessThan(1e-5);
        }
      });

      it('columns with GQA slots: values and the gradients of W, Mᵀ, a equal autodiff of the rule', () => {
        const slots = 2;
        const P = [1, 6, 8, 11];
        const N = [3, 0, 10, 5];
        const s = site(P, N, 1, 12);
        const res = tf.tidy(() => compare(
          ([W, Mt, a]) => mixColumns(W as tf.Tensor2D, s, slots, Mt as tf.Tensor2D, a as tf.Tensor1D, { portable }),
          ([W, Mt, a]) => columnsRule(W as tf.Tensor2D, P, N, slots, Mt as tf.Tensor2D, a as tf.Tensor1D),
          [t2(5, 12), t2(2, 2), t1(2)],
        ));
        expect(res.value).toBeLessThan(1e-6);
        for (const g of res.grads) expect(g).toBeLessThan(1e-5);
      });
    });
  }
}
