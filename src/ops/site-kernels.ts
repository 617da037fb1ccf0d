/**
 * The element-wise halves of a mixing site (site-mixing.ts) as single JavaScript kernels on the
 * cpu and wasm backends. What a site needs besides its small matMuls — take the lines, scale
 * them, add the mixed term, write them back into a copy; and backwards the same plus the
 * reductions for a and b — is one pass over the weight each way here, instead of about eight
 * tfjs kernels forward and fifteen backward, each with its own per-call cost.
 *
 *   rows, forward:     out = W;  out[N_i] = a_i·W[N_i] + Y_i;  out[P_i] = b_i·W[P_i]           (Y = M·W[P])
 *   rows, backward:    dW = dY;  dW[P_i] = b_i·dY[P_i] + Z_i;  dW[N_i] = a_i·dY[N_i]            (Z = Mᵀ·dY[N])
 *                      da_i = Σ dY[N_i]·W[N_i],  db_i = Σ dY[P_i]·W[P_i]
 *   columns, forward:  out = W;  out[:, N_j] = a_(j mod n)·W[:, N_j] + Y[:, j]                    (Y = W[:, P]·Mᵀ per slot)
 *   columns, backward: dW = dY;  dW[:, P_j] += Z[:, j];  dW[:, N_j] = a_(j mod n)·dY[:, N_j]      (Z = dY[:, N]·M per slot)
 *                      da_i = Σ over rows and slots of dY[:, N_j]·W[:, N_j], j mod n = i
 */
import * as tf from '@tensorflow/tfjs';
import { jsKernelRegistration, type KernelIo } from './js-kernel-io.js';

const ROWS_FORWARD = 'ApexMixRowsForward';
const ROWS_BACKWARD = 'ApexMixRowsBackward';
const COLUMNS_FORWARD = 'ApexMixColumnsForward';
const COLUMNS_BACKWARD = 'ApexMixColumnsBackward';

type Inputs = Record<string, tf.TensorInfo>;

function rowsForward(io: KernelIo, { w, y, a, b, p, n }: Inputs): tf.TensorInfo[] {
  const C = w!.shape[1]!;
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

const registerSiteKernels = jsKernelRegistration({
  [ROWS_FORWARD]: (io, inputs) => rowsForward(io, inputs),
  [ROWS_BACKWARD]: (io, inputs) => rowsBackward(io, inputs),
  [COLUMNS_FORWARD]: (io, inputs) => columnsForward(io, inputs),
  [COLUMNS_BACKWARD]: (io, inputs) => columnsBackward(io, inputs),
});

const run = (name: string, inputs: Record<string, tf.Tensor>): tf.Tensor[] => {
  registerSiteKernels();
  const out = tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap) as tf.Tensor | tf.Tensor[];
  return Array.isArray(out) ? out : [out];
};

export function mixRowsForwardKernel(w: tf.Tensor2D, y: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D, p: tf.Tensor1D, n: tf.Tensor1D): tf.Tensor2D {
  return run(ROWS_FORWARD, { w, y, a, b, p, n })[0] as tf.Tensor2D;
}

export function mixRowsBackwardKernel(dy: tf.Tensor2D, w: tf.Tensor2D, z: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D, p: tf.Tensor1D, n: tf.Tensor1D): [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D] {
  return run(ROWS_BACKWARD, { dy, w, z, a, b, p, n }) as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
}

export function mixColumnsForwardKernel(w: tf.Tensor2D, y: tf.Tensor2D, a: tf.Tensor1D, n: tf.Tensor1D): tf.Tensor2D {
  return run(COLUMNS_FORWARD, { w, y, a, n })[0] as tf.Tensor2D;
}

export function mixColumnsBackwardKernel(dy: tf.Tensor2D, w: tf.Tensor2D, z: tf.Tensor2D, a: tf.Tensor1D, p: tf.Tensor1D, n: tf.Tensor1D): [tf.Tensor2D, tf.Tensor1D] {
  return run(COLUMNS_BACKWARD, { dy, w, z, a, p, n }) as [tf.Tensor2D, tf.Tensor1D];
}
