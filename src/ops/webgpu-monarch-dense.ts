/**
 * The dense Monarch matrix M [n, n] from its factors on the webgpu backend, one launch forward
 * and two backward, where the four-step product applied to the identity (monarch-tf.ts) costs
 * about 9 launches forward and 15 backward (transposes and batched matMuls); on webgpu a step's
 * time is its launches (webgpu-programs.ts). The closed form monarch-dense-tf.ts lays out as
 * M = L·R, read per element:
 *
 *   M[r·nb + q][j·bs + c] = Σ_p B2[q][r][p] · B1[j][c'][c]   over p with p·nb + q = j·bs + c'
 *   dB2[q][r][p] = Σ_c dM[r·nb + q][j·bs + c] · B1[j][c'][c]  (j, c' from i = p·nb + q)
 *   dB1[j][c'][c] = Σ_r B2[q][r][p] · dM[r·nb + q][j·bs + c]  (p, q from i = j·bs + c')
 *
 * Each output element loops over bs terms: n²·bs multiply-adds forward, where the products do n³.
 */
import * as tf from '@tensorflow/tfjs';
import { flatProgram, i32Uniform, webgpuKernelRegistration, type WebgpuBackendLike } from './webgpu-programs.js';

const DENSE = 'ApexMonarchDenseWebgpu';
const DENSE_GRAD = 'ApexMonarchDenseWebgpuGrad';
const UNIFORMS = 'nb : i32, bs : i32,';

function dense(backend: WebgpuBackendLike, { b1, b2 }: Record<string, tf.TensorInfo>): tf.TensorInfo {
  const [nb, bs] = b1!.shape as [number, number];
  const n = nb * bs;
  const program = flatProgram(DENSE, ['B1', 'B2'], [n, n], `
    let nb = uniforms.nb; let bs = uniforms.bs; let n = nb * bs; let bb = bs * bs;
    let row = index / n; let col = index - row * n;
    let r = row / nb; let q = row - r * nb;
    let j = col / bs; let c = col - j * bs;
    var acc = 0.0;
    for (var p = 0; p < bs; p++) {
      let cc = p * nb + q - j * bs;
      if (cc >= 0 && cc < bs) { acc = acc + B2[q * bb + r * bs + p] * B1[j * bb + cc * bs + c]; }
    }
    result[index] = acc;`, UNIFORMS);
  return backend.runWebGPUProgram(program, [b1!, b2!], 'float32', i32Uniform([nb, bs]));
}

function denseGrad(backend: WebgpuBackendLike, { dy, b1, b2 }: Record<string, tf.TensorInfo>): tf.TensorInfo[] {
  const [nb, bs] = b1!.shape as [number, number];
  const uniforms = i32Uniform([nb, bs]);
  // Element (x, y, z) of a [nb, bs, bs] output.
  const xyz = 'let nb = uniforms.nb; let bs = uniforms.bs; let n = nb * bs; let bb = bs * bs; let x = index / bb; let y = (index - x * bb) / bs; let z = index - x * bb - y * bs;';
  const dB2 = flatProgram(`${DENSE_GRAD}_b2`, ['DY', 'B1'], [nb, bs, bs], `${xyz}
    let q = x; let r = y; let p = z;
    let i = p * nb + q; let j = i / bs; let cc = i - j * bs;
    var acc = 0.0;
    for (var c = 0; c < bs; c++) { acc = acc + DY[(r * nb + q) * n + j * bs + c] * B1[j * bb + cc * bs + c]; }
    result[index] = acc;`, UNIFORMS);
  const dB1 = flatProgram(`${DENSE_GRAD}_b1`, ['DY', 'B2'], [nb, bs, bs], `${xyz}
    let j = x; let cc = y; let c = z;
    let i = j * bs + cc; let p = i / nb; let q = i - p * nb;
    var acc = 0.0;
    for (var r = 0; r < bs; r++) { acc = acc + B2[q * bb + r * bs + p] * DY[(r * nb + q) * n + j * bs + c]; }
    result[index] = acc;`, UNIFORMS);
  return [backend.runWebGPUProgram(dB1, [dy!, b2!], 'float32', uniforms), backend.runWebGPUProgram(dB2, [dy!, b1!], 'float32', uniforms)];
}

const register = webgpuKernelRegistration(
  {
    [DENSE]: (backend, inputs) => dense(backend, inputs as Record<string, tf.TensorInfo>),
    [DENSE_GRAD]: (backend, inputs) => denseGrad(backend, inputs as Record<string, tf.TensorInfo>),
  },
  [
    {
      kernelName: DENSE,
      inputsToSave: ['b1', 'b2'],
      gradFunc: (dy, saved) => {
        const [b1, b2] = saved;
        const [dB1, dB2] = tf.engine().runKernel(DENSE_GRAD, { dy: dy as tf.Tensor, b1: b1!, b2: b2! }) as tf.Tensor[];
        return { b1: () => dB1!, b2: () => dB2! };
      },
    },
  ],
);

/** M [n, n] with y = M·x from B1, B2 [nb, bs, bs] (block j = [out, in]); webgpu only, differentiable. */
export function monarchDenseWebgpu(B1: tf.Tensor3D, B2: tf.Tensor3D): tf.Tensor2D {
  register();
  return tf.engine().runKernel(DENSE, { b1: B1, b2: B2 }) as tf.Tensor2D;
}
