/**
 * The Monarch matrix of an APEX expansion operator (APEX-METHOD §3): an n×n matrix M stored as
 * two block-diagonal factors B1, B2 of `nb` blocks `bs × bs` (block j is [out, in]) with a
 * fixed permutation between and after them, `2·n²/nb` parameters instead of n². These are the
 * plain-array versions (fusion, file checks, tests); the differentiable tfjs version training
 * uses is in monarch-tf.ts, so loading this module does not load TensorFlow.js.
 *
 * The product y = M·x follows the reference code step by step:
 *   1. u_j = B1[j]·x_j            (x viewed as [nb, bs], row j = x_j)
 *   2. v = transpose(view(u, [bs, nb]))   → v_q[p] = u[p·nb + q]
 *   3. w_q = B2[q]·v_q
 *   4. y = flatten(transpose(view(w, [nb, bs])))  → y[r·nb + q] = w[q·bs + r]
 */
import { BlockMatmul, COLUMN_STRIP } from './block-matmul.js';

export interface MonarchShape {
  /** Number of diagonal blocks. */
  readonly nb: number;
  /** Block size; nb·bs = n. */
  readonly bs: number;
}

/**
 * Block layout for an operator of size n: nb = the divisor of n closest to √n, ties → the
 * smaller. Divisors pair up as (d, n/d) with d ≤ √n ≤ n/d and d + n/d ≥ 2√n, so the lower one
 * of the pair around √n is never farther away: nb is simply the largest divisor with nb² ≤ n,
 * and nb ≤ bs always.
 */
export function monarchBlocks(n: number): MonarchShape {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`Monarch size must be a positive integer, got ${n}`);
  let nb = Math.floor(Math.sqrt(n));
  while (nb * nb > n) nb--;
  while ((nb + 1) * (nb + 1) <= n) nb++;
  while (n % nb !== 0) nb--;
  return { nb, bs: n / nb };
}

/** Parameters of one Monarch matrix of size n: both factors, 2·nb·bs² = 2·n²/nb. */
export function monarchParamCount(n: number): number {
  const { nb, bs } = monarchBlocks(n);
  return 2 * nb * bs * bs;
}

function checkFactors(B1: ArrayLike<number>, B2: ArrayLike<number>, n: number): MonarchShape {
  const shape = monarchBlocks(n);
  const len = shape.nb * shape.bs * shape.bs;
  if (B1.length !== len || B2.length !== len) {
    throw new RangeError(`Monarch factors for n=${n} need ${len} values each ([${shape.nb}, ${shape.bs}, ${shape.bs}]), got ${B1.length} and ${B2.length}`);
  }
  return shape;
}

/** True when one of the factors is all zeros, so M = 0 exactly (the freshly initialised state). */
export function monarchIsZero(B1: ArrayLike<number>, B2: ArrayLike<number>): boolean {
  return allZero(B1) || allZero(B2);
}

function allZero(v: ArrayLike<number>): boolean {
  for (let i = 0; i < v.length; i++) if (v[i] !== 0) return false;
  return true;
}

/** The Monarch product whose kernel memory is currently laid out (one at a time per thread). */
let activeProduct: MonarchProduct | undefined;

/**
 * Y = M·X for X of shape [n, cols] (each column one vector) with the factors loaded once, for
 * callers that apply the same M to many column blocks (fusion): write X's rows into `input()`
 * (row i at i·stride, float64), call `multiply(cols)`, read Y from the returned view (row i at
 * i·stride). Both steps are block products on contiguous rows (block-matmul.ts, float64, each
 * sum accumulated in the order of the block's columns), the permutations are only strides:
 *   step 1, block j:  U rows j·bs … j·bs+bs−1  = B1[j] · X rows j·bs … j·bs+bs−1
 *   step 3, block q:  Y rows r·nb + q (r < bs) = B2[q] · U rows p·nb + q (p < bs)
 * The kernel memory holds one product at a time: creating another one (monarchMultiply does)
 * invalidates this one and its views.
 */
export class MonarchProduct {
  /** Row stride of the input and output views: cols rounded up to the kernel's column strip. */
  readonly stride: number;
  private readonly kernel = BlockMatmul.get();
  private readonly nb: number;
  private readonly bs: number;
  private readonly b1At = 0;
  private readonly b2At: number;
  private readonly xyAt: number;
  private readonly uAt: number;

  /** Loads the factors for products of up to `maxCols` columns. */
  constructor(B1: ArrayLike<number>, B2: ArrayLike<number>, readonly n: number, readonly maxCols: number) {
    const { nb, bs } = checkFactors(B1, B2, n);
    if (!Number.isSafeInteger(maxCols) || maxCols < 1) throw new RangeError(`MonarchProduct: maxCols must be a positive integer, got ${maxCols}`);
    this.nb = nb;
    this.bs = bs;
    this.stride = Math.ceil(maxCols / COLUMN_STRIP) * COLUMN_STRIP;
    this.b2At = B1.length;
    this.xyAt = this.b2At + B2.length;
    this.uAt = this.xyAt + n * this.stride;
    this.kernel.reserve(this.uAt + n * this.stride);
    this.kernel.f64View(this.b1At, B1.length).set(B1);
    this.kernel.f64View(this.b2At, B2.length).set(B2);
    activeProduct = this;
  }

  /** The [n, stride] input rows (the output of the previous `multiply` until overwritten). */
  input(): Float64Array {
    this.checkActive();
    return this.kernel.f64View(this.xyAt, this.n * this.stride);
  }

  /** Y = M·X over the first `cols` columns; returns the [n, stride] output rows (it replaces the input). */
  multiply(cols: number = this.maxCols): Float64Array {
    this.checkActive();
    if (!Number.isSafeInteger(cols) || cols < 1 || cols > this.maxCols) throw new RangeError(`MonarchProduct.multiply: cols ${cols} outside 1..${this.maxCols}`);
    const { nb, bs, stride, kernel } = this;
    const width = Math.ceil(cols / COLUMN_STRIP) * COLUMN_STRIP;
    const bb = bs * bs;
    for (let j = 0; j < nb; j++) kernel.product(this.b1At + j * bb, this.xyAt + j * bs * stride, stride, this.uAt + j * bs * stride, stride, bs, bs, width);
    for (let q = 0; q < nb; q++) kernel.product(this.b2At + q * bb, this.uAt + q * stride, nb * stride, this.xyAt + q * stride, nb * stride, bs, bs, width);
    return this.kernel.f64View(this.xyAt, this.n * stride);
  }

  private checkActive(): void {
    if (activeProduct !== this) throw new Error('MonarchProduct used after another Monarch product took over the kernel memory');
  }
}

/**
 * Y = M·X for X of shape [n, cols] (row-major; each column is one vector), accumulated in
 * float64 (MonarchProduct): applying M to the n selected rows of a [rows, hidden] weight is one
 * call with cols = hidden.
 */
export function monarchMultiply(B1: ArrayLike<number>, B2: ArrayLike<number>, n: number, X: ArrayLike<number>, cols: number): Float64Array {
  checkFactors(B1, B2, n);
  if (!Number.isSafeInteger(cols) || cols < 1 || X.length !== n * cols) throw new RangeError(`monarchMultiply: X has ${X.length} values, expected ${n}×${cols}`);
  const product = new MonarchProduct(B1, B2, n, cols);
  const { stride } = product;
  const input = product.input();
  for (let i = 0; i < n; i++) for (let t = 0; t < cols; t++) input[i * stride + t] = X[i * cols + t]!;
  const out = product.multiply();
  const Y = new Float64Array(n * cols);
  for (let i = 0; i < n; i++) Y.set(out.subarray(i * stride, i * stride + cols), i * cols);
  return Y;
}

/** y = M·x for one vector of length n, rounded once to float32. */
export function monarchApply(B1: ArrayLike<number>, B2: ArrayLike<number>, x: ArrayLike<number>, n: number): Float32Array {
  return Float32Array.from(monarchMultiply(B1, B2, n, x, 1));
}

/**
 * The dense n×n matrix M (row-major, [out, in]) in float64, from the closed form of the four
 * steps: M[r·nb + q][j·bs + c] = Σ_p B2[q][r][p] · B1[j][c'][c] where p·nb + q = j·bs + c'.
 * For inspection and small checks; fusion never materialises M.
 */
export function monarchDense(B1: ArrayLike<number>, B2: ArrayLike<number>, n: number): Float64Array {
  const { nb, bs } = checkFactors(B1, B2, n);
  const bb = bs * bs;
  const M = new Float64Array(n * n);
  for (let q = 0; q < nb; q++) {
    for (let r = 0; r < bs; r++) {
      const row = (r * nb + q) * n;
      for (let p = 0; p < bs; p++) {
        const coef = B2[q * bb + r * bs + p]!;
        if (coef === 0) continue;
        const i = p * nb + q;
        const j = Math.floor(i / bs);
        const cr = i - j * bs;
        for (let c = 0; c < bs; c++) M[row + j * bs + c] += coef * B1[j * bb + cr * bs + c]!;
      }
    }
  }
  return M;
}
