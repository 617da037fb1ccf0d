/**
 * RMSNorm and the rotary embedding as apex's own WebGPU programs, with their gradients
 * (layer-math.ts and rope.ts take them on the webgpu backend). Composed from tfjs ops, an RMSNorm
 * is 6 kernel launches forward and about 12 backward, a rotary embedding (split, concat, two
 * products and a sum) about 6 and 5; here they are 2 + 3 and 1 + 1. On webgpu a training step
 * of apex's model sizes costs its launches, not its arithmetic (docs/gpu.md), and a layer has
 * two of each. Same formulas and order as the tfjs ops:
 *
 *   RMSNorm:  r = 1 / √(mean(x²) + ε) per row;  y = w ⊙ (x · r)
 *             dx = r·g − x·r³·mean(g ⊙ x) with g = dy ⊙ w;  dw = Σ_rows dy ⊙ x · r
 *   rotary:   y = x ⊙ cos + swap(x) ⊙ sin′, swap(x)_j = x_((j + d/2) mod d), sin′ the signed sin
 *             (rope.ts);  dx_j = dy_j·cos_j + dy_j′·sin′_j′ with j′ = (j + d/2) mod d
 */
import * as tf from '@tensorflow/tfjs';
import { f32Uniform, flatProgram, i32Uniform, rowReductionProgram, webgpuKernelRegistration, type WebgpuBackendLike } from '../ops/webgpu-programs.js';

const RMS_NORM = 'ApexRmsNormWebgpu';
const RMS_NORM_GRAD = 'ApexRmsNormWebgpuGrad';
const ROTARY = 'ApexRotaryWebgpu';
const ROTARY_GRAD = 'ApexRotaryWebgpuGrad';

type Inputs = Record<string, tf.TensorInfo>;

const ROW_UNIFORMS = 'rows : i32, rowLength : i32, eps : f32,';
const X2 = 'X[row * uniforms.rowLength + c] * X[row * uniforms.rowLength + c]';
const RSTD = 'inverseSqrt(sum0 / f32(uniforms.rowLength) + uniforms.eps)';

/** 1/√(mean(x²) + ε) of each row of x viewed as [rows, d]. */
function rowRstd(backend: WebgpuBackendLike, x: tf.TensorInfo, eps: number): tf.TensorInfo {
  const d = x.shape[x.shape.length - 1]!;
  const rows = x.shape.reduce((a, b) => a * b, 1) / d;
  const program = rowReductionProgram('apexRmsRstd', ['X'], rows, [rows], [X2], `result[row] = ${RSTD};`, ROW_UNIFORMS);
  return backend.runWebGPUProgram(program, [x], 'float32', [...i32Uniform([rows, d]), ...f32Uniform([eps])]);
}

function rmsNorm(backend: WebgpuBackendLike, { x, w }: Inputs, eps: number): tf.TensorInfo {
  const d = x!.shape[x!.shape.length - 1]!;
  const r = rowRstd(backend, x!, eps);
  const program = flatProgram('apexRmsNorm', ['X', 'W', 'R'], x!.shape as number[], `
    let row = index / uniforms.d; let c = index - row * uniforms.d;
    result[index] = W[c] * (X[index] * R[row]);`, 'd : i32,');
  const y = backend.runWebGPUProgram(program, [x!, w!, r], 'float32', i32Uniform([d]));
  backend.disposeData(r.dataId);
  return y;
}

function rmsNormGrad(backend: WebgpuBackendLike, { dy, x, w }: Inputs, eps: number): tf.TensorInfo[] {
  const d = x!.shape[x!.shape.length - 1]!;
  const rows = x!.shape.reduce((a, b) => a * b, 1) / d;
  // Per row: r and s = Σ (dy ⊙ w) ⊙ x, interleaved.
  const rs = rowReductionProgram('apexRmsGradRows', ['DY', 'X', 'W'], rows, [rows, 2], [X2, '(DY[row * uniforms.rowLength + c] * W[c]) * X[row * uniforms.rowLength + c]'],
    `result[2 * row] = ${RSTD}; result[2 * row + 1] = sum1;`, ROW_UNIFORMS);
  const RS = backend.runWebGPUProgram(rs, [dy!, x!, w!], 'float32', [...i32Uniform([rows, d]), ...f32Uniform([eps])]);
  const dxProgram = flatProgram('apexRmsGradX', ['DY', 'X', 'W', 'RS'], x!.shape as number[], `
    let row = index / uniforms.d; let c = index - row * uniforms.d;
    let r = RS[2 * row]; let s = RS[2 * row + 1];
    result[index] = r * (DY[index] * W[c]) - X[index] * (r * r * r) * (s / f32(uniforms.d));`, 'd : i32,');
  const dx = backend.runWebGPUProgram(dxProgram, [dy!, x!, w!, RS], 'float32', i32Uniform([d]));
  const dwProgram = flatProgram('apexRmsGradW', ['DY', 'X', 'RS'], [d], `
    var acc = 0.0;
    for (var row = 0; row < uniforms.rows; row++) { let i = row * uniforms.d + index; acc = acc + DY[i] * (X[i] * RS[2 * row]); }
    result[index] = acc;`, 'd : i32, rows : i32,');
  const dw = backend.runWebGPUProgram(dwProgram, [dy!, x!, RS], 'float32', i32Uniform([d, rows]));
  backend.disposeData(RS.dataId);
  return [dx, dw];
}

/** Element (t, j) of the [T, d] tables for flat index `index` of x [..., T, d]. */
const ROTARY_INDEX = 'let j = index % uniforms.d; let t = (index / uniforms.d) % uniforms.t; let half = uniforms.d / 2; let jj = (j + half) % uniforms.d; let other = index - j + jj;';

function rotary(backend: WebgpuBackendLike, { x, cos, sin }: Inputs, grad: boolean): tf.TensorInfo {
  const [T, d] = cos!.shape as [number, number];
  const body = grad
    ? `${ROTARY_INDEX} result[index] = X[index] * C[t * uniforms.d + j] + X[other] * S[t * uniforms.d + jj];`
    : `${ROTARY_INDEX} result[index] = X[index] * C[t * uniforms.d + j] + X[other] * S[t * uniforms.d + j];`;
  const program = flatProgram(grad ? 'apexRotaryGrad' : 'apexRotary', ['X', 'C', 'S'], x!.shape as number[], body, 'd : i32, t : i32,');
  return backend.runWebGPUProgram(program, [x!, cos!, sin!], 'float32', i32Uniform([d, T]));
}

const register = webgpuKernelRegistration(
  {
    [RMS_NORM]: (backend, inputs, attrs: { eps: number }) => rmsNorm(backend, inputs as Inputs, attrs.eps),
    [RMS_NORM_GRAD]: (backend, inputs, attrs: { eps: number }) => rmsNormGrad(backend, inputs as Inputs, attrs.eps),
    [ROTARY]: (backend, inputs) => rotary(backend, inputs as Inputs, false),
    [ROTARY_GRAD]: (backend, inputs) => rotary(backend, { x: (inputs as Inputs).dy!, cos: (inputs as Inputs).cos!, sin: (inputs as Inputs).sin! }, true),
  },
  [
    {
      kernelName: RMS_NORM,
      inputsToSave: ['x', 'w'],
      gradFunc: (dy, saved, attrs) => {
        const [x, w] = saved;
        const [dx, dw] = tf.engine().runKernel(RMS_NORM_GRAD, { dy: dy as tf.Tensor, x: x!, w: w! }, attrs) as tf.Tensor[];
        return { x: () => dx!, w: () => dw! };
      },
    },
    {
      kernelName: ROTARY,
      inputsToSave: ['cos', 'sin'],
      gradFunc: (dy, saved) => {
        const [cos, sin] = saved;
        // The tables are constants (rope.ts); their gradients are never asked for in training.
        return {
          x: () => tf.engine().runKernel(ROTARY_GRAD, { dy: dy as tf.Tensor, cos: cos!, sin: sin! }) as tf.Tensor,
          cos: () => tf.zerosLike(cos!),
          sin: () => tf.zerosLike(sin!),
        };
      },
    },
  ],
);

/** w ⊙ x / √(mean(x²) + ε) over the last axis (webgpu only, differentiable in x and w). */
export function rmsNormWebgpu<T extends tf.Tensor>(x: T, weight: tf.Tensor1D, eps: number): T {
  register();
  return tf.engine().runKernel(RMS_NORM, { x, w: weight }, { eps }) as T;
}

/** x ⊙ cos + rotate_half(x) ⊙ sin for x [B, n, T, d] and tables [T, d], `sin` with rope.ts's sign folded in (webgpu only). */
export function rotaryWebgpu(x: tf.Tensor4D, cos: tf.Tensor2D, signedSin: tf.Tensor2D): tf.Tensor4D {
  register();
  return tf.engine().runKernel(ROTARY, { x, cos, sin: signedSin }) as tf.Tensor4D;
}
