/**
 * One APEX mixing site as a single differentiable op with a hand-written gradient
 * (APEX-METHOD §3), for the operator-augmented forward (operator-hooks.ts):
 *
 *   mixRows     output side, rows of W [width, in]:  W[N] ← diag(a)·W[N] + M·W[P],  W[P] ← diag(b)·W[P]
 *   mixColumns  input side, columns of W [rows, width], per slot s:  W[:, N_s] ← W[:, N_s]·diag(a) + W[:, P_s]·Mᵀ
 *
 * Autodiff through the composed ops would keep every intermediate and run about twice as many
 * kernels (zero-filled scatters for each line move's gradient, split/concat gradients, the
 * broadcasts' reductions); written out, the backward pass is one line move into dW plus small
 * products on the 2n selected lines. On cpu and wasm each direction is one kernel of
 * site-kernels.ts (a registered kernel and gradient), on webgpu one of webgpu-site-kernels.ts
 * (a few launches each way); other backends (tensorflow) run the same gradient from tfjs ops
 * here. test/ops/site-mixing.test.ts checks the cpu/wasm routes, values and gradients, against
 * plain autodiff of the rule; the GPU check (bench/gpu-check.ts, part `kernels`) the webgpu one.
 */
import * as tf from '@tensorflow/tfjs';
import { onJsBackend } from './js-kernel-io.js';
import type { LineSet } from './line-moves.js';
import { columnSiteKernel, rowSiteKernel } from './site-kernels.js';
import { onWebgpu } from './webgpu-programs.js';
import { columnSiteWebgpu, rowSiteWebgpu } from './webgpu-site-kernels.js';

const asColumn = (v: tf.Tensor1D) => tf.reshape(v, [v.shape[0], 1]) as tf.Tensor2D;

/**
 * The lines of a site on axis 0 (mixRows) or 1 (mixColumns): P, N, and P then N (`both`, for
 * writing them back in one move). Taking P and N apart is cheaper than taking both and
 * splitting: tfjs's SplitV slices each part again.
 */
export interface SiteLines {
  readonly P: LineSet;
  readonly N: LineSet;
  readonly both: LineSet;
}

// The forward's intermediates do not outlive it (tfjs runs the forward in its own tidy scope
// and keeps only what is saved), so the gradients take the selected lines again from the
// saved inputs: a take is cheaper than keeping them.
type Grad = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];

/**
 * The element-wise halves of a row site around its matMuls (Y = M·W_P forward; Z = Mᵀ·dN and
 * dM = dN·W_Pᵀ backward), from tfjs ops: the route of the backends without apex's site kernels.
 */
interface RowsElementwise {
  forward(w: tf.Tensor2D, WP: tf.Tensor2D, Y: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D;
  /** dW, da, db from dY and Z (dN = dY[N] and W[P] given, as the caller has taken them). */
  backward(dy: tf.Tensor2D, w: tf.Tensor2D, dN: tf.Tensor2D, WP: tf.Tensor2D, Z: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor[];
}

function rowsElementwise(site: SiteLines): RowsElementwise {
  const { P, N, both } = site;
  return {
    forward: (w, WP, Y, a, b) => both.put(w, tf.concat([tf.mul(WP, asColumn(b)), tf.add(tf.mul(N.take(w), asColumn(a)), Y)], 0) as tf.Tensor2D),
    backward: (dy, w, dN, WP, Z, a, b) => {
      const dP = P.take(dy);
      const dW = both.put(dy, tf.concat([tf.add(tf.mul(dP, asColumn(b)), Z), tf.mul(dN, asColumn(a))], 0) as tf.Tensor2D);
      return [dW, tf.sum(tf.mul(dN, N.take(w)), 1), tf.sum(tf.mul(dP, WP), 1)];
    },
  };
}

/**
 * Output side on the rows of W [width, in] (a bias as [width, 1]); M is [n, n], a and b [n].
 * By linearity the same function as §3's activation rule y_N ← a ⊙ y_N + M·y_P, y_P ← b ⊙ y_P
 * on y = W·x. `portable` forces the tfjs-ops route on cpu/wasm too (to check it).
 */
export function mixRows(W: tf.Tensor2D, site: SiteLines, M: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D, options: { portable?: boolean } = {}): tf.Tensor2D {
  const n = a.shape[0];
  if (site.both.lines.length !== 2 * n || M.shape[0] !== n) throw new RangeError(`mixRows: ${site.both.lines.length} lines for an operator of size ${n}`);
  if (!options.portable && onJsBackend()) return rowSiteKernel(W, M, a, b, site.P.indices, site.N.indices);
  if (!options.portable && onWebgpu()) return rowSiteWebgpu(W, M, a, b, site.P.indices, site.N.indices, site.both.sources);
  const ew = rowsElementwise(site);
  const op = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [w, m, av, bv] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
    (inputs[4] as tf.GradSaveFunc)([w, m, av, bv]);
    const gradFunc: Grad = (dy, saved) => {
      const [w0, m0, a0, b0] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
      const dN = site.N.take(dy as tf.Tensor2D);
      const WP = site.P.take(w0);
      const [dW, dA, dB] = ew.backward(dy as tf.Tensor2D, w0, dN, WP, tf.matMul(tf.transpose(m0), dN), a0, b0);
      return [dW!, tf.matMul(dN, tf.transpose(WP)), dA!, dB!];
    };
    const WP = site.P.take(w);
    return { value: ew.forward(w, WP, tf.matMul(m, WP), av, bv), gradFunc };
  }) as (w: tf.Tensor2D, m: tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D) => tf.Tensor2D;
  return op(W, M, a, b);
}

/** [rows, slots·n] ⇄ [rows·slots, n]: one slot's columns per row (row-major). */
function slotViews(rows: number, slots: number, n: number) {
  return {
    bySlot: (x: tf.Tensor2D) => (slots === 1 ? x : (tf.reshape(x, [rows * slots, n]) as tf.Tensor2D)),
    byColumn: (x: tf.Tensor2D) => (slots === 1 ? x : (tf.reshape(x, [rows, slots * n]) as tf.Tensor2D)),
  };
}

/**
 * The element-wise halves of a column site around its matMuls (Y = W[:, P]·Mᵀ per slot forward;
 * Z = dN·M and dMᵀ = W_Pᵀ·dN per slot backward), from tfjs ops, as for rows.
 */
interface ColumnsElementwise {
  forward(w: tf.Tensor2D, WP: tf.Tensor2D, Y: tf.Tensor2D, a: tf.Tensor1D): tf.Tensor2D;
  /** dW and da from dY and Z (dN = dY[:, N] given). */
  backward(dy: tf.Tensor2D, w: tf.Tensor2D, dN: tf.Tensor2D, Z: tf.Tensor2D, a: tf.Tensor1D): tf.Tensor[];
}

function columnsElementwise(site: SiteLines, rows: number, slots: number, n: number): ColumnsElementwise {
  const { P, N, both } = site;
  const scaleRow = (v: tf.Tensor1D) => tf.reshape(slots === 1 ? v : tf.tile(v, [slots]), [1, slots * n]) as tf.Tensor2D;
  return {
    forward: (w, WP, Y, a) => both.put(w, tf.concat([WP, tf.add(tf.mul(N.take(w), scaleRow(a)), Y)], 1) as tf.Tensor2D),
    backward: (dy, w, dN, Z, a) => {
      const dW = both.put(dy, tf.concat([tf.add(P.take(dy), Z), tf.mul(dN, scaleRow(a))], 1) as tf.Tensor2D);
      return [dW, tf.sum(tf.reshape(tf.mul(dN, N.take(w)), [rows * slots, n]), 0)];
    },
  };
}

/**
 * Input side on the columns of W [rows, width] for `slots` groups of columns sharing M and a
 * (GQA o_proj; one slot otherwise). The site's P and N hold the slots' columns one slot after
 * another, n per slot; Mt is Mᵀ [n, n].
 */
export function mixColumns(W: tf.Tensor2D, site: SiteLines, slots: number, Mt: tf.Tensor2D, a: tf.Tensor1D, options: { portable?: boolean } = {}): tf.Tensor2D {
  const n = a.shape[0];
  const rows = W.shape[0];
  if (site.both.lines.length !== 2 * slots * n || Mt.shape[0] !== n) throw new RangeError(`mixColumns: ${site.both.lines.length} lines for ${slots} slot(s) of an operator of size ${n}`);
  if (!options.portable && onJsBackend()) return columnSiteKernel(W, Mt, a, site.P.indices, site.N.indices);
  const ew = columnsElementwise(site, rows, slots, n);
  const { bySlot, byColumn } = slotViews(rows, slots, n);
  const op = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [w, mt, av] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
    (inputs[3] as tf.GradSaveFunc)([w, mt, av]);
    const gradFunc: Grad = (dy, saved) => {
      const [w0, mt0, a0] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
      const dN = site.N.take(dy as tf.Tensor2D);
      const dNSlots = bySlot(dN);
      const [dW, dA] = ew.backward(dy as tf.Tensor2D, w0, dN, byColumn(tf.matMul(dNSlots, tf.transpose(mt0))), a0);
      return [dW!, tf.matMul(tf.transpose(bySlot(site.P.take(w0))), dNSlots), dA!];
    };
    const WP = site.P.take(w);
    return { value: ew.forward(w, WP, byColumn(tf.matMul(bySlot(WP), mt)), av), gradFunc };
  }) as (w: tf.Tensor2D, mt: tf.Tensor2D, a: tf.Tensor1D) => tf.Tensor2D;
  return op(W, Mt, a);
}

/**
 * mixColumns with M itself instead of Mᵀ, for the webgpu backend, whose site kernel
 * (webgpu-site-kernels.ts) uses the matMul's transpose flags: no transpose of M is launched.
 * Other backends transpose M and take mixColumns's route.
 */
export function mixColumnsWithM(W: tf.Tensor2D, site: SiteLines, slots: number, M: tf.Tensor2D, a: tf.Tensor1D, options: { portable?: boolean } = {}): tf.Tensor2D {
  if (options.portable || !onWebgpu()) return mixColumns(W, site, slots, tf.transpose(M), a, options);
  const n = a.shape[0];
  if (site.both.lines.length !== 2 * slots * n || M.shape[0] !== n) throw new RangeError(`mixColumns: ${site.both.lines.length} lines for ${slots} slot(s) of an operator of size ${n}`);
  return columnSiteWebgpu(W, M, a, site.P.indices, site.N.indices, site.both.sources);
}

/**
 * The same two sites for large operators, where a dense M would cost n² per line (against the
 * factorised product's 2·n·bs): composed from line moves and the four-step Monarch product,
 * differentiated by autodiff. `monarch(X)` is X·Mᵀ for X [lines, n] (monarchApplyTf).
 */
export function mixRowsFactorised(W: tf.Tensor2D, site: SiteLines, monarch: (x: tf.Tensor2D) => tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  const [WP, WN] = [site.P.take(W), site.N.take(W)];
  // M·W_P = (W_Pᵀ·Mᵀ)ᵀ
  const newN = tf.add(tf.mul(WN, asColumn(a)), tf.transpose(monarch(tf.transpose(WP))));
  return site.both.put(W, tf.concat([tf.mul(WP, asColumn(b)), newN], 0) as tf.Tensor2D);
}

export function mixColumnsFactorised(W: tf.Tensor2D, site: SiteLines, slots: number, monarch: (x: tf.Tensor2D) => tf.Tensor2D, a: tf.Tensor1D): tf.Tensor2D {
  const rows = W.shape[0];
  const n = a.shape[0];
  const [WP, WN] = [site.P.take(W), site.N.take(W)];
  const mixed = tf.reshape(monarch(tf.reshape(WP, [rows * slots, n]) as tf.Tensor2D), [rows, slots * n]);
  const scale = tf.reshape(slots === 1 ? a : tf.tile(a, [slots]), [1, slots * n]);
  return site.both.put(W, tf.concat([WP, tf.add(tf.mul(WN, scale), mixed)], 1) as tf.Tensor2D);
}
