/**
 * RMSNorm, the rotary embedding and the gated activation as apex's own WebGPU programs, with
 * their gradients (layer-math.ts and rope.ts take them on the webgpu backend). Composed from
 * tfjs ops, an RMSNorm is 6 kernel launches forward and about 12 backward; the heads' transpose
 * and rotary embedding (transpose, split, concat, two products and a sum) about 7 and 6;
 * silu(gate) · up 3 and about 7; here they are 2 + 3, 1 + 1 and 1 + 2. On webgpu a training step
 * of apex's model sizes costs its launches, not its arithmetic (docs/gpu.md), and a layer has
 * two norms, two rotations and one gated activation. Same formulas and order as the tfjs ops:
 *
 *   RMSNorm:  r = 1 / √(mean(x²) + ε) per row;  y = w ⊙ (x · r)
 *             dx = r·g − x·r³·mean(g ⊙ x) with g = dy ⊙ w;  dw = Σ_rows dy ⊙ x · r
 *   rotary:   y = x ⊙ cos + swap(x) ⊙ sin′, swap(x)_j = x_((j + d/2) mod d), sin′ the signed sin
 *             (rope.ts);  dx_j = dy_j·cos_j + dy_j′·sin′_j′ with j′ = (j + d/2) mod d
 *   gated:    y = (g · σ(g)) · u;  dg = dy · u · (σ + g·σ·(1 − σ));  du = dy · g · σ
 */
import * as tf from '@tensorflow/tfjs';
import { f32Uniform, flatProgram, i32Uniform, rowReductionProgram, webgpuKernelRegistration, type WebgpuBackendLike } from '../ops/webgpu-programs.js';

const RMS_NORM = 'ApexRmsNormWebgpu';
const RMS_NORM_GRAD = 'ApexRmsNormWebgpuGrad';
const ROTARY_HEADS = 'ApexRotaryHeadsWebgpu';
const ROTARY_HEADS_GRAD = 'ApexRotaryHeadsWebgpuGrad';
const SILU_MUL = 'ApexSiluMulWebgpu';
const SILU_MUL_GRAD = 'ApexSiluMulWebgpuGrad';

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

// The rotary embedding reads x in the projection's layout [B, T, n, d] and writes the heads'
// layout [B, n, T, d] (the transpose the attention needs, done in the same pass); backward the
// reverse. Element (t, j) of the [T, d] tables; j′ = (j + d/2) mod d is the partner rotate_half
// swaps in.
const HEADS_INDEX = `
  let d = uniforms.d; let n = uniforms.heads; let T = uniforms.t;
  let j = index % d; let rest = index / d;`;
const PARTNER = 'let jj = (j + d / 2) % d;';

function rotaryHeads(backend: WebgpuBackendLike, { x, cos, sin }: Inputs, heads: number): tf.TensorInfo {
  const [B, T] = x!.shape as [number, number, number];
  const d = cos!.shape[1]!;
  // Output [B, n, T, d]: rest = (b·n + h)·T + t; the input row of (b, t, h) is (b·T + t)·n + h.
  const program = flatProgram('apexRotaryHeads', ['X', 'C', 'S'], [B, heads, T, d], `${HEADS_INDEX}
    let t = rest % T; let bh = rest / T; let h = bh % n; let b = bh / n;
    let base = ((b * T + t) * n + h) * d;
    ${PARTNER}
    result[index] = X[base + j] * C[t * d + j] + X[base + jj] * S[t * d + j];`, 'd : i32, heads : i32, t : i32,');
  return backend.runWebGPUProgram(program, [x!, cos!, sin!], 'float32', i32Uniform([d, heads, T]));
}

function rotaryHeadsGrad(backend: WebgpuBackendLike, { dy, cos, sin }: Inputs, heads: number): tf.TensorInfo {
  const [B, , T, d] = dy!.shape as [number, number, number, number];
  // Output [B, T, n·d]: rest = (b·T + t)·n + h; the gradient row of (b, h, t) is (b·n + h)·T + t.
  const program = flatProgram('apexRotaryHeadsGrad', ['DY', 'C', 'S'], [B, T, heads * d], `${HEADS_INDEX}
    let h = rest % n; let bt = rest / n; let t = bt % T; let b = bt / T;
    let base = ((b * n + h) * T + t) * d;
    ${PARTNER}
    result[index] = DY[base + j] * C[t * d + j] + DY[base + jj] * S[t * d + jj];`, 'd : i32, heads : i32, t : i32,');
  return backend.runWebGPUProgram(program, [dy!, cos!, sin!], 'float32', i32Uniform([d, heads, T]));
}

// silu(gate) · up as transformers computes it (x · sigmoid(x), then the product), and its gradient:
// d gate = dy · up · (s + g · s · (1 − s)), d up = dy · g · s, with s = sigmoid(g) written as tfjs's
// webgpu kernel writes it.
const SIGMOID = 'let g = G[index]; let s = 1.0 / (1.0 + exp(-1.0 * g));';

function siluMul(backend: WebgpuBackendLike, { gate, up }: Inputs): tf.TensorInfo {
  const program = flatProgram('apexSiluMul', ['G', 'U'], gate!.shape as number[], `${SIGMOID} result[index] = (g * s) * U[index];`);
  return backend.runWebGPUProgram(program, [gate!, up!], 'float32');
}

function siluMulGrad(backend: WebgpuBackendLike, { dy, gate, up }: Inputs): tf.TensorInfo[] {
  const shape = gate!.shape as number[];
  const dGate = flatProgram('apexSiluMulGradGate', ['DY', 'G', 'U'], shape, `${SIGMOID} result[index] = (DY[index] * U[index]) * (s + g * s * (1.0 - s));`);
  const dUp = flatProgram('apexSiluMulGradUp', ['DY', 'G'], shape, `${SIGMOID} result[index] = DY[index] * (g * s);`);
  return [backend.runWebGPUProgram(dGate, [dy!, gate!, up!], 'float32'), backend.runWebGPUProgram(dUp, [dy!, gate!], 'float32')];
}

const register = webgpuKernelRegistration(
  {
    [RMS_NORM]: (backend, inputs, attrs: { eps: number }) => rmsNorm(backend, inputs as Inputs, attrs.eps),
    [RMS_NORM_GRAD]: (backend, inputs, attrs: { eps: number }) => rmsNormGrad(backend, inputs as Inputs, attrs.eps),
    [ROTARY_HEADS]: (backend, inputs, attrs: { heads: number }) => rotaryHeads(backend, inputs as Inputs, attrs.heads),
    [ROTARY_HEADS_GRAD]: (backend, inputs, attrs: { heads: number }) => rotaryHeadsGrad(backend, inputs as Inputs, attrs.heads),
    [SILU_MUL]: (backend, inputs) => siluMul(backend, inputs as Inputs),
    [SILU_MUL_GRAD]: (backend, inputs) => siluMulGrad(backend, inputs as Inputs),
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
      kernelName: ROTARY_HEADS,
      inputsToSave: ['cos', 'sin'],
      gradFunc: (dy, saved, attrs) => {
        const [cos, sin] = saved;
        // The tables are constants (rope.ts); their gradients are never asked for in training.
        return {
          x: () => tf.engine().runKernel(ROTARY_HEADS_GRAD, { dy: dy as tf.Tensor, cos: cos!, sin: sin! }, attrs) as tf.Tensor,
          cos: () => tf.zerosLike(cos!),
          sin: () => tf.zerosLike(sin!),
        };
      },
    },
    {
      kernelName: SILU_MUL,
      inputsToSave: ['gate', 'up'],
      gradFunc: (dy, saved) => {
        const [gate, up] = saved;
        const [dGate, dUp] = tf.engine().runKernel(SILU_MUL_GRAD, { dy: dy as tf.Tensor, gate: gate!, up: up! }) as tf.Tensor[];
        return { gate: () => dGate!, up: () => dUp! };
      },
    },
  ],
);

/** w ⊙ x / √(mean(x²) + ε) over the last axis (webgpu only, differentiable in x and w). */
export function rmsNormWebgpu<T extends tf.Tensor>(x: T, weight: tf.Tensor1D, eps: number): T {
  register();
  return tf.engine().runKernel(RMS_NORM, { x, w: weight }, { eps }) as T;
}

/**
 * The rotary embedding of x [B, T, n·d] (a q or k projection) into the heads' layout [B, n, T, d]:
 * transpose and rotation in one pass (webgpu only). Tables [T, d], `signedSin` with rope.ts's
 * sign folded in.
 */
export function rotaryHeadsWebgpu(x: tf.Tensor3D, heads: number, cos: tf.Tensor2D, signedSin: tf.Tensor2D): tf.Tensor4D {
  register();
  return tf.engine().runKernel(ROTARY_HEADS, { x, cos, sin: signedSin }, { heads }) as tf.Tensor4D;
}

/** silu(gate) ⊙ up (webgpu only, differentiable in both). */
export function siluMulWebgpu<T extends tf.Tensor>(gate: T, up: T): T {
  register();
  return tf.engine().runKernel(SILU_MUL, { gate, up }) as T;
}
