// M = L·R (monarch-dense-tf.ts): the dense Monarch matrix and its factor gradients on the
// JavaScript-side backends, against the explicit permutation/block-diagonal chain of
// dense-reference.ts (values) and against bilinearity (gradients: M is linear in each factor,
// so dL/dB1[e] = Σ dM ⊙ M(unit e, B2) exactly), and against the portable route other
// backends take (the four-step product on the identity, autodiff) at a realistic size.
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { monarchDenseTf, monarchFactorMatrices } from '../../src/ops/monarch-dense-tf.js';
import { monarchBlocks } from '../../src/ops/monarch.js';
import { monarchApplyTf } from '../../src/ops/monarch-tf.js';
import { Rng } from '../../src/util/rng.js';
import { denseMonarch, matmul, maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

const rng = new Rng(41);

beforeAll(async () => {
  await selectBackend('cpu');
});

function gradients(B1: Float32Array, B2: Float32Array, dM: Float32Array, nb: number, bs: number, route: 'js' | 'portable'): { dB1: Float32Array; dB2: Float32Array } {
  return tf.tidy(() => {
    const n = nb * bs;
    const f = (b1: tf.Tensor, b2: tf.Tensor) =>
      route === 'js' ? monarchDenseTf(b1 as tf.Tensor3D, b2 as tf.Tensor3D) : tf.transpose(monarchApplyTf(b1 as tf.Tensor3D, b2 as tf.Tensor3D, tf.eye(n) as tf.Tensor2D));
    const [g1, g2] = tf.grads(f)([tf.tensor3d(B1, [nb, bs, bs]), tf.tensor3d(B2, [nb, bs, bs])], tf.tensor2d(dM, [n, n]));
    return { dB1: g1!.dataSync() as Float32Array, dB2: g2!.dataSync() as Float32Array };
  });
}

describe('monarchFactorMatrices', () => {
  it('multiply to the explicit Monarch matrix, and the transposed layout is the transpose', () => {
    for (const n of [1, 4, 6, 12, 20]) {
      const { nb, bs } = monarchBlocks(n);
      const B1 = randomArray(rng, nb * bs * bs);
      const B2 = randomArray(rng, nb * bs * bs);
      const { L, R } = monarchFactorMatrices(B1, B2, nb, bs);
      const LR = matmul({ rows: n, cols: n, v: Float64Array.from(L) }, { rows: n, cols: n, v: Float64Array.from(R) });
      const want = denseMonarch(B1, B2, nb, bs);
      expect(maxAbsDiff(LR.v, want.v), `n=${n}`).toBeLessThan(1e-12 * Math.max(1, maxAbs(want.v)));
      const t = monarchFactorMatrices(B1, B2, nb, bs, true);
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < n; c++) {
          expect(t.L[c * n + r]).toBe(L[r * n + c]);
          expect(t.R[c * n + r]).toBe(R[r * n + c]);
        }
      }
    }
  });
});

describe('monarchDenseTf on the cpu backend', () => {
  it('equals the explicit Monarch matrix', () => {
    for (const n of [1, 6, 12, 129]) {
      const { nb, bs } = monarchBlocks(n);
      const B1 = randomArray(rng, nb * bs * bs);
      const B2 = randomArray(rng, nb * bs * bs);
      const got = tf.tidy(() => monarchDenseTf(tf.tensor3d(B1, [nb, bs, bs]), tf.tensor3d(B2, [nb, bs, bs])).dataSync());
      const want = denseMonarch(B1, B2, nb, bs);
      expect(maxAbsDiff(got, want.v), `n=${n}`).toBeLessThan(1e-5 * maxAbs(want.v));
    }
  });

  it('has the factor gradients that bilinearity gives', () => {
    for (const n of [4, 6, 12]) {
      const { nb, bs } = monarchBlocks(n);
      const size = nb * bs * bs;
      const B1 = randomArray(rng, size);
      const B2 = randomArray(rng, size);
      const dM = randomArray(rng, n * n);
      const unit = (e: number) => Float32Array.from({ length: size }, (_, i) => (i === e ? 1 : 0));
      const dot = (m: ArrayLike<number>) => { let s = 0; for (let i = 0; i < m.length; i++) s += m[i]! * dM[i]!; return s; };
      const want1 = Float64Array.from({ length: size }, (_, e) => dot(denseMonarch(unit(e), B2, nb, bs).v));
      const want2 = Float64Array.from({ length: size }, (_, e) => dot(denseMonarch(B1, unit(e), nb, bs).v));
      const { dB1, dB2 } = gradients(B1, B2, dM, nb, bs, 'js');
      expect(maxAbsDiff(dB1, want1), `dB1 n=${n}`).toBeLessThan(1e-5 * maxAbs(want1));
      expect(maxAbsDiff(dB2, want2), `dB2 n=${n}`).toBeLessThan(1e-5 * maxAbs(want2));
    }
  });

  it('has the gradients of the portable route at an FFN-sized operator (n = 129)', () => {
    const { nb, bs } = monarchBlocks(129);
    const B1 = randomArray(rng, nb * bs * bs);
    const B2 = randomArray(rng, nb * bs * bs);
    const dM = randomArray(rng, 129 * 129);
    const js = gradients(B1, B2, dM, nb, bs, 'js');
    const portable = gradients(B1, B2, dM, nb, bs, 'portable');
    expect(maxAbsDiff(js.dB1, portable.dB1)).toBeLessThan(1e-5 * maxAbs(portable.dB1));
    expect(maxAbsDiff(js.dB2, portable.dB2)).toBeLessThan(1e-5 * maxAbs(portable.dB2));
  });
});
