/**
 * The dense Monarch matrix M [n, n] as a differentiable function of its factors B1, B2, for
 * the operator-augmented forward (operator-hooks.ts), which applies M to weight lines with one
 * matMul per site. On the JavaScript-side backends (cpu, wasm) M is one product of two sparse
 * [n, n] matrices laid out in plain loops, M = L·R (monarchFactorMatrices), and its gradient two
 * more (dL = dM·Rᵀ, dR = Lᵀ·dM, read back at the factors' positions): three tfjs matMuls and a
 * few small copies instead of the differentiable four-step product applied to the identity,
 * which the tensorflow backend keeps; webgpu computes the same closed form per element in one
 * launch (webgpu-monarch-dense.ts). The products do n³ multiply-adds where
 * the closed form of monarch.ts does n·bs², but run in the backend's matMul (XNNPACK on wasm,
 * ≈ 30 GFLOP/s here) instead of a JavaScript loop (≈ 0.7 GFLOP/s): at n = 129 (nb 3, bs 43) on
 * this repository's 2-core VM, ≈ 0.7 → 0.3 ms forward and ≈ 0.8 → 0.5 ms backward.
 */
import * as tf from '@tensorflow/tfjs';
import { onJsBackend } from './js-kernel-io.js';
import { monarchApplyTf } from './monarch-tf.js';
import { onWebgpu } from './webgpu-programs.js';
import { monarchDenseWebgpu } from './webgpu-monarch-dense.js';

/**
 * M = L·R with L, R [n, n] row-major, from the closed form M[r·nb + q][j·bs + c] =
 * Σ_p B2[q][r][p] · B1[j][c'][c], p·nb + q = j·bs + c': the sum runs over t = q·bs + p, with
 * L[r·nb + q][q·bs + p] = B2[q][r][p] (B2's blocks, both permutations folded in) and
 * R[q·bs + p][j·bs + c] = B1[j][c'][c] (row i = p·nb + q of blockdiag(B1)). `transposed` lays
 * out Lᵀ and Rᵀ instead, for the gradient.
 */
export function monarchFactorMatrices(B1: ArrayLike<number>, B2: ArrayLike<number>, nb: number, bs: number, transposed = false): { L: Float32Array; R: Float32Array } {
  const n = nb * bs;
  const bb = bs * bs;
  const L = new Float32Array(n * n);
  const R = new Float32Array(n * n);
  // Element (row, col) of L or R goes to row·n + col, or col·n + row when transposed.
  const [rowStride, colStride] = transposed ? [1, n] : [n, 1];
  for (let q = 0; q < nb; q++) {
    for (let p = 0; p < bs; p++) {
      const t = q * bs + p;
      for (let r = 0; r < bs; r++) L[(r * nb + q) * rowStride + t * colStride] = B2[q * bb + r * bs + p]!;
      const i = p * nb + q;
      const j = Math.floor(i / bs);
      const from = j * bb + (i - j * bs) * bs;
      for (let c = 0; c < bs; c++) R[t * rowStride + (j * bs + c) * colStride] = B1[from + c]!;
    }
  }
  return { L, R };
}

/** dL/dB1 and dL/dB2 from dL/dL and dL/dR (the factor matrices' gradients), read at the positions monarchFactorMatrices filled. */
export function monarchFactorGradients(dL: ArrayLike<number>, dR: ArrayLike<number>, nb: number, bs: number): { dB1: Float32Array; dB2: Float32Array } {
  const n = nb * bs;
  const bb = bs * bs;
  const dB1 = new Float32Array(nb * bb);
  const dB2 = new Float32Array(nb * bb);
  for (let q = 0; q < nb; q++) {
    for (let p = 0; p < bs; p++) {
      const t = q * bs + p;
      for (let r = 0; r < bs; r++) dB2[q * bb + r * bs + p] = dL[(r * nb + q) * n + t]!;
      const i = p * nb + q;
      const j = Math.floor(i / bs);
      const to = j * bb + (i - j * bs) * bs;
      for (let c = 0; c < bs; c++) dB1[to + c] = dR[t * n + j * bs + c]!;
    }
  }
  return { dB1, dB2 };
}

const denseJs = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const B1 = inputs[0] as tf.Tensor3D;
  const B2 = inputs[1] as tf.Tensor3D;
  const [nb, bs] = B1.shape;
  const n = nb * bs;
  const b1 = B1.dataSync();
  const b2 = B2.dataSync();
  const { L, R } = monarchFactorMatrices(b1, b2, nb, bs);
  return {
    value: tf.matMul(tf.tensor2d(L, [n, n]), tf.tensor2d(R, [n, n])),
    gradFunc: (dy: tf.Tensor) => {
      const t = monarchFactorMatrices(b1, b2, nb, bs, true);
      const dL = tf.matMul(dy as tf.Tensor2D, tf.tensor2d(t.R, [n, n]));
      const dR = tf.matMul(tf.tensor2d(t.L, [n, n]), dy as tf.Tensor2D);
      const { dB1, dB2 } = monarchFactorGradients(dL.dataSync(), dR.dataSync(), nb, bs);
      return [tf.tensor3d(dB1, [nb, bs, bs]), tf.tensor3d(dB2, [nb, bs, bs])];
    },
  };
}) as (B1: tf.Tensor3D, B2: tf.Tensor3D) => tf.Tensor2D;

/** M [n, n] with y = M·x, differentiable in B1 and B2 ([nb, bs, bs], block j = [out, in]). */
export function monarchDenseTf(B1: tf.Tensor3D, B2: tf.Tensor3D): tf.Tensor2D {
  if (onJsBackend()) return denseJs(B1, B2);
  if (onWebgpu()) return monarchDenseWebgpu(B1, B2);
  const n = B1.shape[0] * B1.shape[1];
  // monarchApplyTf(X) = X·Mᵀ, so its value on the identity is Mᵀ.
  return tf.transpose(monarchApplyTf(B1, B2, tf.eye(n) as tf.Tensor2D));
}
