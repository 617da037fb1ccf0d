/**
 * The dense Monarch matrix M [n, n] as a differentiable function of its factors B1, B2, for
 * the operator-augmented forward (operator-hooks.ts), which applies M to weight lines with one
 * matMul per site. On the JavaScript-side backends (cpu, wasm) M and the gradients of B1, B2
 * are computed in plain loops over the closed form of monarch.ts (n·bs² multiply-adds each
 * way, float64 sums rounded once): far fewer kernels than the differentiable four-step product
 * applied to the identity, which the other backends (webgpu, tensorflow) keep.
 */
import * as tf from '@tensorflow/tfjs';
import { onJsBackend } from './js-kernel-io.js';
import { monarchDense } from './monarch.js';
import { monarchApplyTf } from './monarch-tf.js';


/**
 * dL/dB1 and dL/dB2 from dL/dM, by the closed form M[r·nb + q][j·bs + c] = Σ_p B2[q][r][p] ·
 * B1[j][c'][c] with p·nb + q = j·bs + c'.
 */
export function monarchDenseGradients(B1: ArrayLike<number>, B2: ArrayLike<number>, dM: ArrayLike<number>, nb: number, bs: number): { dB1: Float32Array; dB2: Float32Array } {
  const n = nb * bs;
  const bb = bs * bs;
  const dB1 = new Float64Array(nb * bb);
  const dB2 = new Float64Array(nb * bb);
  for (let q = 0; q < nb; q++) {
    for (let p = 0; p < bs; p++) {
      const i = p * nb + q;
      const j = Math.floor(i / bs);
      const b1Row = j * bb + (i - j * bs) * bs;
      for (let r = 0; r < bs; r++) {
        const row = (r * nb + q) * n + j * bs;
        const coef = B2[q * bb + r * bs + p]!;
        let sum = 0;
        for (let c = 0; c < bs; c++) {
          const g = dM[row + c]!;
          sum += g * B1[b1Row + c]!;
          dB1[b1Row + c]! += g * coef;
        }
        dB2[q * bb + r * bs + p] = sum;
      }
    }
  }
  return { dB1: Float32Array.from(dB1), dB2: Float32Array.from(dB2) };
}

const denseJs = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const B1 = inputs[0] as tf.Tensor3D;
  const B2 = inputs[1] as tf.Tensor3D;
  const [nb, bs] = B1.shape;
  const n = nb * bs;
  const b1 = B1.dataSync();
  const b2 = B2.dataSync();
  return {
    value: tf.tensor2d(Float32Array.from(monarchDense(b1, b2, n)), [n, n]),
    gradFunc: (dy: tf.Tensor) => {
      const { dB1, dB2 } = monarchDenseGradients(b1, b2, dy.dataSync(), nb, bs);
      return [tf.tensor3d(dB1, [nb, bs, bs]), tf.tensor3d(dB2, [nb, bs, bs])];
    },
  };
}) as (B1: tf.Tensor3D, B2: tf.Tensor3D) => tf.Tensor2D;

/** M [n, n] with y = M·x, differentiable in B1 and B2 ([nb, bs, bs], block j = [out, in]). */
export function monarchDenseTf(B1: tf.Tensor3D, B2: tf.Tensor3D): tf.Tensor2D {
  if (onJsBackend()) return denseJs(B1, B2);
  const n = B1.shape[0] * B1.shape[1];
  // monarchApplyTf(X) = X·Mᵀ, so its value on the identity is Mᵀ.
  return tf.transpose(monarchApplyTf(B1, B2, tf.eye(n) as tf.Tensor2D));
}
