/**
 * The mixing sites of site-kernels.ts on the webgpu backend: the same rules (written out there
 * and in site-mixing.ts), as kernels of the webgpu backend with a registered gradient, built
 * from the backend's own GatherV2 and BatchMatMul plus apex's element-wise programs
 * (webgpu-programs.ts). A row site costs 3 launches forward and 7 backward, a column site 3
 * and 6, where the tfjs-ops route of site-mixing.ts costs ≈ 27–30 per site: gathers, concats,
 * transposes, broadcast scales and their gradients. On webgpu a step's time is its launches
 * (docs/gpu.md).
 *
 * Each kernel also takes `s`, the site's `both.sources` (line-moves.ts): for every line of the
 * weight, where `put` takes it from (itself, or extent + i for the i-th of P then N), so a
 * program finds in one read whether an element's line is untouched, P_i or N_i.
 *
 * The column site takes M itself (not Mᵀ as the cpu/wasm kernel does): its products use
 * BatchMatMul's transpose flags, so no transpose launches are needed.
 *
 *   rows, forward:     WP = W[P];  Y = M·WP;  out[N_i] = a_i·W[N_i] + Y_i;  out[P_i] = b_i·W[P_i]
 *   rows, backward:    dN = dY[N];  Z = Mᵀ·dN;  dM = dN·WPᵀ;  dW[P_i] = b_i·dY[P_i] + Z_i;  dW[N_i] = a_i·dY[N_i]
 *                      da_i = Σ dY[N_i]·W[N_i];  db_i = Σ dY[P_i]·W[P_i]
 *   columns, forward:  WP = W[:, P] as [R·slots, n];  Y = WP·Mᵀ;  out[:, N_j] = a_(j mod n)·W[:, N_j] + Y[:, j]
 *   columns, backward: dN = dY[:, N] as [R·slots, n];  Z = dN·M;  dM = dNᵀ·WP;  dW[:, P_j] = dY[:, P_j] + Z[:, j]
 *                      dW[:, N_j] = a_(j mod n)·dY[:, N_j];  da_i = Σ over rows and slots of dY[:, N_j]·W[:, N_j]
 */
import * as tf from '@tensorflow/tfjs';
import { flatProgram, i32Uniform, rowReductionProgram, webgpuKernelRegistration, type WebgpuBackendLike } from './webgpu-programs.js';

const ROW_SITE = 'ApexRowSiteWebgpu';
const ROW_SITE_GRAD = 'ApexRowSiteWebgpuGrad';
const COLUMN_SITE = 'ApexColumnSiteWebgpu';
const COLUMN_SITE_GRAD = 'ApexColumnSiteWebgpuGrad';

type Inputs = Record<string, tf.TensorInfo>;

interface Ops {
  gather(x: tf.TensorInfo, indices: tf.TensorInfo, axis: 0 | 1): tf.TensorInfo;
  matMul(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): tf.TensorInfo;
  release(...infos: tf.TensorInfo[]): void;
}

/** The backend's own kernels, called on TensorInfos inside a kernel (intermediates released by the caller). */
function ops(backend: WebgpuBackendLike): Ops {
  const kernel = (name: string) => {
    const k = tf.getKernel(name, 'webgpu');
    if (!k) throw new Error(`the webgpu backend has no ${name} kernel`);
    return k.kernelFunc as unknown as (args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs: unknown }) => tf.TensorInfo;
  };
  const gatherV2 = kernel('GatherV2');
  const batchMatMul = kernel('BatchMatMul');
  return {
    gather: (x, indices, axis) => gatherV2({ inputs: { x, indices }, backend, attrs: { axis, batchDims: 0 } }),
    matMul: (a, b, transposeA, transposeB) => batchMatMul({ inputs: { a, b }, backend, attrs: { transposeA, transposeB } }),
    release: (...infos) => infos.forEach((t) => backend.disposeData(t.dataId)),
  };
}

const as2d = (t: tf.TensorInfo, shape: [number, number]): tf.TensorInfo => ({ dataId: t.dataId, shape, dtype: t.dtype });

// Every element program starts from its flat index: row r, column c of the weight [R, C].
const RC = 'let r = index / uniforms.cols; let c = index - r * uniforms.cols;';

function rowSite(backend: WebgpuBackendLike, { w, m, a, b, p, s }: Inputs): tf.TensorInfo {
  const o = ops(backend);
  const [R, C] = w!.shape as [number, number];
  const n = a!.shape[0]!;
  const WP = o.gather(w!, p!, 0);
  const Y = o.matMul(m!, WP, false, false);
  const program = flatProgram('apexRowSite', ['W', 'Y', 'A', 'B', 'S'], [R, C], `${RC}
    let s = S[r] - uniforms.rows;
    var v = W[index];
    if (s >= 0) {
      if (s < uniforms.n) { v = B[s] * v; } else { let i = s - uniforms.n; v = A[i] * v + Y[i * uniforms.cols + c]; }
    }
    result[index] = v;`, 'rows : i32, cols : i32, n : i32,');
  const out = backend.runWebGPUProgram(program, [w!, Y, a!, b!, s!], 'float32', i32Uniform([R, C, n]));
  o.release(WP, Y);
  return out;
}

/** Σ_c X[line, c]·W[line, c] for each line in L (row dot products of the listed rows). */
function rowDots(backend: WebgpuBackendLike, dy: tf.TensorInfo, w: tf.TensorInfo, lines: tf.TensorInfo): tf.TensorInfo {
  const C = w.shape[1]!;
  const k = lines.shape[0]!;
  const at = 'L[row] * uniforms.rowLength + c';
  const program = rowReductionProgram('apexRowDots', ['DY', 'W', 'L'], k, [k], [`DY[${at}] * W[${at}]`], 'result[row] = sum0;', 'rows : i32, rowLength : i32,');
  return backend.runWebGPUProgram(program, [dy, w, lines], 'float32', i32Uniform([k, C]));
}

function rowSiteGrad(backend: WebgpuBackendLike, { dy, w, m, a, b, p, n: nIdx, s }: Inputs): tf.TensorInfo[] {
  const o = ops(backend);
  const [R, C] = w!.shape as [number, number];
  const n = a!.shape[0]!;
  const dN = o.gather(dy!, nIdx!, 0);
  const WP = o.gather(w!, p!, 0);
  const Z = o.matMul(m!, dN, true, false);
  const dM = o.matMul(dN, WP, false, true);
  const program = flatProgram('apexRowSiteGrad', ['DY', 'Z', 'A', 'B', 'S'], [R, C], `${RC}
    let s = S[r] - uniforms.rows;
    var g = DY[index];
    if (s >= 0) {
      if (s < uniforms.n) { g = B[s] * g + Z[s * uniforms.cols + c]; } else { g = A[s - uniforms.n] * g; }
    }
    result[index] = g;`, 'rows : i32, cols : i32, n : i32,');
  const dW = backend.runWebGPUProgram(program, [dy!, Z, a!, b!, s!], 'float32', i32Uniform([R, C, n]));
  const dA = rowDots(backend, dy!, w!, nIdx!);
  const dB = rowDots(backend, dy!, w!, p!);
  o.release(dN, WP, Z);
  return [dW, dM, dA, dB];
}

function columnSite(backend: WebgpuBackendLike, { w, m, a, p, s }: Inputs): tf.TensorInfo {
  const o = ops(backend);
  const [R, C] = w!.shape as [number, number];
  const n = a!.shape[0]!;
  const lines = p!.shape[0]!;
  const WP = o.gather(w!, p!, 1);
  const Y = o.matMul(as2d(WP, [(R * lines) / n, n]), m!, false, true);
  const program = flatProgram('apexColumnSite', ['W', 'Y', 'A', 'S'], [R, C], `${RC}
    let s = S[c] - uniforms.cols;
    var v = W[index];
    if (s >= uniforms.lines) { let j = s - uniforms.lines; v = A[j % uniforms.n] * v + Y[r * uniforms.lines + j]; }
    result[index] = v;`, 'cols : i32, n : i32, lines : i32,');
  const out = backend.runWebGPUProgram(program, [w!, Y, a!, s!], 'float32', i32Uniform([C, n, lines]));
  o.release(WP, Y);
  return out;
}

function columnSiteGrad(backend: WebgpuBackendLike, { dy, w, m, a, p, n: nIdx, s }: Inputs): tf.TensorInfo[] {
  const o = ops(backend);
  const [R, C] = w!.shape as [number, number];
  const n = a!.shape[0]!;
  const lines = p!.shape[0]!;
  const bySlot: [number, number] = [(R * lines) / n, n];
  const dN = o.gather(dy!, nIdx!, 1);
  const WP = o.gather(w!, p!, 1);
  const Z = o.matMul(as2d(dN, bySlot), m!, false, false);
  const dM = o.matMul(as2d(dN, bySlot), as2d(WP, bySlot), true, false);
  const program = flatProgram('apexColumnSiteGrad', ['DY', 'Z', 'A', 'S'], [R, C], `${RC}
    let s = S[c] - uniforms.cols;
    var g = DY[index];
    if (s >= 0) {
      if (s < uniforms.lines) { g = g + Z[r * uniforms.lines + s]; } else { g = A[(s - uniforms.lines) % uniforms.n] * g; }
    }
    result[index] = g;`, 'cols : i32, n : i32, lines : i32,');
  const dW = backend.runWebGPUProgram(program, [dy!, Z, a!, s!], 'float32', i32Uniform([C, n, lines]));
  const dots = flatProgram('apexColumnDots', ['DN', 'W', 'L'], [n], `
    var acc = 0.0;
    for (var r = 0; r < uniforms.rows; r++) {
      for (var j = index; j < uniforms.lines; j = j + uniforms.n) { acc = acc + DN[r * uniforms.lines + j] * W[r * uniforms.cols + L[j]]; }
    }
    result[index] = acc;`, 'rows : i32, cols : i32, n : i32, lines : i32,');
  const dA = backend.runWebGPUProgram(dots, [dN, w!, nIdx!], 'float32', i32Uniform([R, C, n, lines]));
  o.release(dN, WP, Z);
  return [dW, dM, dA];
}

const register = webgpuKernelRegistration(
  {
    [ROW_SITE]: (backend, inputs) => rowSite(backend, inputs as Inputs),
    [ROW_SITE_GRAD]: (backend, inputs) => rowSiteGrad(backend, inputs as Inputs),
    [COLUMN_SITE]: (backend, inputs) => columnSite(backend, inputs as Inputs),
    [COLUMN_SITE_GRAD]: (backend, inputs) => columnSiteGrad(backend, inputs as Inputs),
  },
  [
    {
      kernelName: ROW_SITE,
      inputsToSave: ['w', 'm', 'a', 'b', 'p', 'n', 's'],
      gradFunc: (dy, saved) => {
        const [w, m, a, b, p, n, s] = saved;
        const [dW, dM, dA, dB] = tf.engine().runKernel(ROW_SITE_GRAD, { dy: dy as tf.Tensor, w: w!, m: m!, a: a!, b: b!, p: p!, n: n!, s: s! }) as tf.Tensor[];
        return { w: () => dW!, m: () => dM!, a: () => dA!, b: () => dB! };
      },
    },
    {
      kernelName: COLUMN_SITE,
      inputsToSave: ['w', 'm', 'a', 'p', 'n', 's'],
      gradFunc: (dy, saved) => {
        const [w, m, a, p, n, s] = saved;
        const [dW, dM, dA] = tf.engine().runKernel(COLUMN_SITE_GRAD, { dy: dy as tf.Tensor, w: w!, m: m!, a: a!, p: p!, n: n!, s: s! }) as tf.Tensor[];
        return { w: () => dW!, m: () => dM!, a: () => dA! };
      },
    },
  ],
);

/**
 * Output side on the rows of W [width, in] (webgpu only): M [n, n], a and b [n], P and N [n]
 * int32 row indices, `sources` the site's both.sources [width].
 */
export function rowSiteWebgpu(W: tf.Tensor2D, M: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D, P: tf.Tensor1D, N: tf.Tensor1D, sources: tf.Tensor1D): tf.Tensor2D {
  register();
  return tf.engine().runKernel(ROW_SITE, { w: W, m: M, a, b, p: P, n: N, s: sources }) as tf.Tensor2D;
}

/**
 * Input side on the columns of W [rows, width] (webgpu only): M [n, n] (not transposed), a [n],
 * P and N [slots·n] int32 column indices slot after slot, `sources` the site's both.sources [width].
 */
export function columnSiteWebgpu(W: tf.Tensor2D, M: tf.Tensor2D, a: tf.Tensor1D, P: tf.Tensor1D, N: tf.Tensor1D, sources: tf.Tensor1D): tf.Tensor2D {
  register();
  return tf.engine().runKernel(COLUMN_SITE, { w: W, m: M, a, p: P, n: N, s: sources }) as tf.Tensor2D;
}
