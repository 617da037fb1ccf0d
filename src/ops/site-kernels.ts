/**
 * A mixing site (site-mixing.ts) as two kernels of apex's own on the cpu and wasm backends:
 * the forward and its gradient, registered with tfjs like any kernel and its gradient. Each
 * does its small matMuls and transposes by calling the backend's own kernels directly on
 * temporaries (KernelIo.call: XNNPACK on wasm) and its element-wise work — take the lines, scale
 * them, add the mixed term, write them back into a copy; backwards the same plus the
 * reductions for a and b — in one JavaScript pass over the weight each way (row sites on wasm:
 * WebAssembly SIMD passes, row-simd.ts). The engine sees
 * one op forward and one backward per site; composed from tfjs ops (or with the element-wise
 * halves as separate kernels around engine matMuls, as before) a site was 20–25 ops with their
 * bookkeeping, about a third of its time (docs/benchmarks.md).
 *
 *   rows, forward:     Y = M·W[P];  out = W;  out[N_i] = a_i·W[N_i] + Y_i;  out[P_i] = b_i·W[P_i]
 *   rows, backward:    dN = dY[N];  Z = Mᵀ·dN;  dM = dN·W[P]ᵀ
 *                      dW = dY;  dW[P_i] = b_i·dY[P_i] + Z_i;  dW[N_i] = a_i·dY[N_i]
 *                      da_i = Σ dY[N_i]·W[N_i],  db_i = Σ dY[P_i]·W[P_i]
 *   columns, forward:  Y = W[:, P]·Mᵀ per slot;  out = W;  out[:, N_j] = a_(j mod n)·W[:, N_j] + Y[:, j]
 *   columns, backward: dN = dY[:, N];  Z = dN·M per slot;  dMᵀ = W[:, P]ᵀ·dN per slot
 *                      dW = dY;  dW[:, P_j] += Z[:, j];  dW[:, N_j] = a_(j mod n)·dY[:, N_j]
 *                      da_i = Σ over rows and slots of dY[:, N_j]·W[:, N_j], j mod n = i
 *
 * "Per slot": the site's P and N hold `slots` groups of n columns (GQA o_proj), one slot after
 * another; [R, slots·n] read row-major as [R·slots, n] puts one slot's columns per row.
 */
import * as tf from '@tensorflow/tfjs';
import { jsKernelRegistration, reshaped, type KernelIo, type KernelValues } from './js-kernel-io.js';
import { copyLines } from './line-moves.js';
import { rowSimdSupports } from './row-simd.js';

type Inputs = Record<string, tf.TensorInfo>;

function rowsForward(io: KernelIo, { w, y, a, b, p, n }: Inputs): tf.TensorInfo[] {
  const C = w!.shape[1]!;
  if (io.simd && rowSimdSupports(C)) {
    const { rows, address } = io.simd;
    const [out] = io.outputs([w!.shape as number[]], [w!], ([o], [W]) => o!.set(W as Float32Array));
    rows.scaleAddRows(address(out!), address(w!), address(y!), address(a!), address(n!), a!.shape[0]!, C);
    rows.scaleRows(address(out!), address(w!), address(b!), address(p!), a!.shape[0]!, C);
    return [out!];
  }
  return io.outputs([w!.shape as number[]], [w!, y!, a!, b!, p!, n!], ([out], [W, Y, A, B, P, N]) => {
    out!.set(W as Float32Array);
    for (let i = 0; i < A!.length; i++) {
      const pn = P![i]! * C;
      const nn = N![i]! * C;
      const yi = i * C;
      const ai = A![i]!;
      const bi = B![i]!;
      for (let c = 0; c < C; c++) {
        out![nn + c] = ai * W![nn + c]! + Y![yi + c]!;
        out![pn + c] = bi * W![pn + c]!;
      }
    }
  });
}

function rowsBackward(io: KernelIo, { dy, w, z, a, b, p, n }: Inputs): tf.TensorInfo[] {
  const C = w!.shape[1]!;
  const k = a!.shape[0]!;
  if (io.simd && rowSimdSupports(C)) {
    const { rows, address } = io.simd;
    const [dW, dA, dB] = io.outputs([w!.shape as number[], [k], [k]], [dy!], ([o], [DY]) => o!.set(DY as Float32Array));
    rows.dotRows(address(dA!), address(dy!), address(w!), address(n!), k, C);
    rows.dotRows(address(dB!), address(dy!), address(w!), address(p!), k, C);
    rows.scaleRows(address(dW!), address(dy!), address(a!), address(n!), k, C);
    rows.scaleAddRows(address(dW!), address(dy!), address(z!), address(b!), address(p!), k, C);
    return [dW!, dA!, dB!];
  }
  return io.outputs([w!.shape as number[], [k], [k]], [dy!, w!, z!, a!, b!, p!, n!], ([dW, dA, dB], [DY, W, Z, A, B, P, N]) => {
    dW!.set(DY as Float32Array);
    for (let i = 0; i < k; i++) {
      const pn = P![i]! * C;
      const nn = N![i]! * C;
      const zi = i * C;
      const ai = A![i]!;
      const bi = B![i]!;
      let sa = 0;
      let sb = 0;
      for (let c = 0; c < C; c++) {
        const gN = DY![nn + c]!;
        const gP = DY![pn + c]!;
        sa += gN * W![nn + c]!;
        sb += gP * W![pn + c]!;
        dW![nn + c] = ai * gN;
        dW![pn + c] = bi * gP + Z![zi + c]!;
      }
      dA![i] = sa;
      dB![i] = sb;
    }
  });
}

// Column j of the site (slot s = j div n, unit i = j mod n) is walked as s·n + i, so that the
// inner loops need no modulo.
function columnsForward(io: KernelIo, { w, y, a, n }: Inputs): tf.TensorInfo[] {
  const [R, C] = w!.shape as [number, number];
  const k = a!.shape[0]!;
  const m = n!.shape[0]!;
  return io.outputs([[R, C]], [w!, y!, a!, n!], ([out], [W, Y, A, N]) => {
    out!.set(W as Float32Array);
    for (let r = 0; r < R; r++) {
      const row = r * C;
      const yr = r * m;
      for (let s = 0; s < m; s += k) {
        for (let i = 0; i < k; i++) {
          const at = row + N![s + i]!;
          out![at] = A![i]! * W![at]! + Y![yr + s + i]!;
        }
      }
    }
  });
}

function columnsBackward(io: KernelIo, { dy, w, z, a, p, n }: Inputs): tf.TensorInfo[] {
  const [R, C] = w!.shape as [number, number];
  const k = a!.shape[0]!;
  const m = n!.shape[0]!;
  return io.outputs([[R, C], [k]], [dy!, w!, z!, a!, p!, n!], ([dW, dA], [DY, W, Z, A, P, N]) => {
    dW!.set(DY as Float32Array);
    const sums = new Float64Array(k);
    for (let r = 0; r < R; r++) {
      const row = r * C;
      const zr = r * m;
      for (let s = 0; s < m; s += k) {
        for (let i = 0; i < k; i++) {
          const j = s + i;
          const at = row + N![j]!;
          const g = DY![at]!;
          sums[i]! += g * W![at]!;
          dW![at] = A![i]! * g;
          dW![row + P![j]!]! += Z![zr + j]!;
        }
      }
    }
    for (let i = 0; i < k; i++) dA![i] = sums[i]!;
  });
}

/** Rows `lines` of W [·, C] into out [k, C]. */
const takeRows = (W: KernelValues, C: number, lines: KernelValues, out: Float32Array) => copyLines(W as Float32Array, C, out, C, 0, 0, lines, null, lines.length);
/** Columns `lines` of W [R, C] into out [R, k]. */
const takeColumns = (W: KernelValues, R: number, C: number, lines: KernelValues, out: Float32Array) => copyLines(W as Float32Array, C, out, lines.length, R, 1, lines, null, lines.length);

const MATMUL = { transposeA: false, transposeB: false };
const TRANSPOSE = { perm: [1, 0] };

function rowSiteForward(io: KernelIo, { w, m, a, b, p, n }: Inputs): tf.TensorInfo {
  const C = w!.shape[1]!;
  const [WP] = io.outputs([[p!.shape[0]!, C]], [w!, p!], ([out], [W, P]) => takeRows(W!, C, P!, out!));
  const Y = io.call('BatchMatMul', { a: m!, b: WP! }, MATMUL);
  const [out] = rowsForward(io, { w, y: Y, a, b, p, n });
  io.release(WP!, Y);
  return out!;
}

function rowSiteBackward(io: KernelIo, { dy, w, m, a, b, p, n }: Inputs): tf.TensorInfo[] {
  const C = w!.shape[1]!;
  const k = p!.shape[0]!;
  const [dN, WP] = io.outputs([[k, C], [k, C]], [dy!, w!, p!, n!], ([dNo, WPo], [DY, W, P, N]) => {
    takeRows(DY!, C, N!, dNo!);
    takeRows(W!, C, P!, WPo!);
  });
  const Mt = io.call('Transpose', { x: m! }, TRANSPOSE);
  const Z = io.call('BatchMatMul', { a: Mt, b: dN! }, MATMUL);
  const [dW, dA, dB] = rowsBackward(io, { dy, w, z: Z, a, b, p, n });
  const WPt = io.call('Transpose', { x: WP! }, TRANSPOSE);
  const dM = io.call('BatchMatMul', { a: dN!, b: WPt }, MATMUL);
  io.release(dN!, WP!, Mt, Z, WPt);
  return [dW!, dM, dA!, dB!];
}

function columnSiteForward(io: KernelIo, { w, mt, a, p, n }: Inputs): tf.TensorInfo {
  const [R, C] = w!.shape as [number, number];
  const k = a!.shape[0]!;
  const m = p!.shape[0]!;
  const [WP] = io.outputs([[R, m]], [w!, p!], ([out], [W, P]) => takeColumns(W!, R, C, P!, out!));
  const Y = io.call('BatchMatMul', { a: reshaped(WP!, [(R * m) / k, k]), b: mt! }, MATMUL);
  const [out] = columnsForward(io, { w, y: reshaped(Y, [R, m]), a, n });
  io.release(WP!, Y);
  return out!;
}

function columnSiteBackward(io: KernelIo, { dy, w, mt, a, p, n }: Inputs): tf.TensorInfo[] {
  const [R, C] = w!.shape as [number, number];
  const k = a!.shape[0]!;
  const m = p!.shape[0]!;
  const bySlot = [(R * m) / k, k];
  const [dN, WP] = io.outputs([[R, m], [R, m]], [dy!, w!, p!, n!], ([dNo, WPo], [DY, W, P, N]) => {
    takeColumns(DY!, R, C, N!, dNo!);
    takeColumns(W!, R, C, P!, WPo!);
  });
  const M = io.call('Transpose', { x: mt! }, TRANSPOSE);
  const Z = io.call('BatchMatMul', { a: reshaped(dN!, bySlot), b: M }, MATMUL);
  const [dW, dA] = columnsBackward(io, { dy, w, z: reshaped(Z, [R, m]), a, p, n });
  const WPt = io.call('Transpose', { x: reshaped(WP!, bySlot) }, TRANSPOSE);
  const dMt = io.call('BatchMatMul', { a: WPt, b: reshaped(dN!, bySlot) }, MATMUL);
  io.release(dN!, WP!, M, Z, WPt);
  return [dW!, dMt, dA!];
}

const ROW_SITE = 'ApexRowSite';
const ROW_SITE_GRAD = 'ApexRowSiteGrad';
const COLUMN_SITE = 'ApexColumnSite';
const COLUMN_SITE_GRAD = 'ApexColumnSiteGrad';

const registerKernels = jsKernelRegistration({
  [ROW_SITE]: (io, inputs) => rowSiteForward(io, inputs),
  [ROW_SITE_GRAD]: (io, inputs) => rowSiteBackward(io, inputs),
  [COLUMN_SITE]: (io, inputs) => columnSiteForward(io, inputs),
  [COLUMN_SITE_GRAD]: (io, inputs) => columnSiteBackward(io, inputs),
});

let gradientsRegistered = false;
function register(): void {
  registerKernels();
  if (gradientsRegistered) return;
  gradientsRegistered = true;
  tf.registerGradient({
    kernelName: ROW_SITE,
    inputsToSave: ['w', 'm', 'a', 'b', 'p', 'n'],
    gradFunc: (dy, saved) => {
      const [w, m, a, b, p, n] = saved;
      const [dW, dM, dA, dB] = tf.engine().runKernel(ROW_SITE_GRAD, { dy: dy as tf.Tensor, w: w!, m: m!, a: a!, b: b!, p: p!, n: n! }) as tf.Tensor[];
      return { w: () => dW!, m: () => dM!, a: () => dA!, b: () => dB! };
    },
  });
  tf.registerGradient({
    kernelName: COLUMN_SITE,
    inputsToSave: ['w', 'mt', 'a', 'p', 'n'],
    gradFunc: (dy, saved) => {
      const [w, mt, a, p, n] = saved;
      const [dW, dMt, dA] = tf.engine().runKernel(COLUMN_SITE_GRAD, { dy: dy as tf.Tensor, w: w!, mt: mt!, a: a!, p: p!, n: n! }) as tf.Tensor[];
      return { w: () => dW!, mt: () => dMt!, a: () => dA! };
    },
  });
}

/** Output side on the rows of W [width, in]: M [n, n], a and b [n], P and N [n] int32 row indices. cpu and wasm only. */
export function rowSiteKernel(W: tf.Tensor2D, M: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D, P: tf.Tensor1D, N: tf.Tensor1D): tf.Tensor2D {
  register();
  return tf.engine().runKernel(ROW_SITE, { w: W, m: M, a, b, p: P, n: N }) as tf.Tensor2D;
}

/** Input side on the columns of W [rows, width]: Mt = Mᵀ [n, n], a [n], P and N [slots·n] int32 column indices, slot after slot. cpu and wasm only. */
export function columnSiteKernel(W: tf.Tensor2D, Mt: tf.Tensor2D, a: tf.Tensor1D, P: tf.Tensor1D, N: tf.Tensor1D): tf.Tensor2D {
  register();
  return tf.engine().runKernel(COLUMN_SITE, { w: W, mt: Mt, a, p: P, n: N }) as tf.Tensor2D;
}
