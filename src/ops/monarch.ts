/**
 * The Monarch matrix of an APEX expansion operator (APEX-METHOD §3): an n×n matrix M stored as
 * two block-diagonal factors B1, B2 of `nb` blocks `bs × bs` (block j is [out, in]) with a
 * fixed permutation between and after them, `2·n²/nb` parameters instead of n². Plain-array
 * versions serve fusion and file checks; the tfjs version is the differentiable one training uses.
 *
 * The product y = M·x follows the reference code step by step:
 *   1. u_j = B1[j]·x_j            (x viewed as [nb, bs], row j = x_j)
 *   2. v = transpose(view(u, [bs, nb]))   → v_q[p] = u[p·nb + q]
 *   3. w_q = B2[q]·v_q
 *   4. y = flatten(transpose(view(w, [nb, bs])))  → y[r·nb + q] = w[q·bs + r]
 */
import * as tf from '@tensorflow/tfjs';

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

/**
 * Y = M·X for X of shape [n, cols] (row-major; each column is one vector), accumulated in
 * float64. Works on whole rows so the inner loops run over contiguous memory: applying M to
 * the n selected rows of a [rows, hidden] weight is one call with cols = hidden.
 */
export function monarchMultiply(B1: ArrayLike<number>, B2: ArrayLike<number>, n: number, X: ArrayLike<number>, cols: number): Float64Array {
  const { nb, bs } = checkFactors(B1, B2, n);
  if (X.length !== n * cols) throw new RangeError(`monarchMultiply: X has ${X.length} values, expected ${n}×${cols}`);
  const bb = bs * bs;
  // Step 1: u[j·bs + r] = Σ_c B1[j][r][c] · x[j·bs + c]
  const u = new Float64Array(n * cols);
  for (let j = 0; j < nb; j++) {
    for (let r = 0; r < bs; r++) {
      const uo = (j * bs + r) * cols;
      for (let c = 0; c < bs; c++) {
        const coef = B1[j * bb + r * bs + c]!;
        if (coef === 0) continue;
        const xo = (j * bs + c) * cols;
        for (let t = 0; t < cols; t++) u[uo + t] += coef * X[xo + t]!;
      }
    }
  }
  // Steps 2–4: w_q[r] = Σ_p B2[q][r][p] · u[p·nb + q], then y[r·nb + q] = w_q[r].
  const y = new Float64Array(n * cols);
  for (let q = 0; q < nb; q++) {
    for (let r = 0; r < bs; r++) {
      const yo = (r * nb + q) * cols;
      for (let p = 0; p < bs; p++) {
        const coef = B2[q * bb + r * bs + p]!;
        if (coef === 0) continue;
        const uo = (p * nb + q) * cols;
        for (let t = 0; t < cols; t++) y[yo + t] += coef * u[uo + t]!;
      }
    }
  }
  return y;
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

/**
 * Differentiable Monarch product for a batch of row vectors: X is [rows, n] and the result is
 * [rows, n] with row i = M·X[i], i.e. Y = X·Mᵀ. Used on the output side with X = activations
 * (each token's selected features are one row) and on the input side with X = W[:, P] (each
 * weight row's selected columns), where W[:, P]·Mᵀ is exactly what §3 asks for.
 * B1, B2 are [nb, bs, bs] with block j = [out, in]. Block factors are transposed explicitly
 * before the batched matMul (transposed matMul is slow on the wasm backend).
 */
export function monarchApplyTf(B1: tf.Tensor3D, B2: tf.Tensor3D, x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const [nb, bs] = B1.shape;
    const rows = x.shape[0];
    const n = nb * bs;
    if (x.shape[1] !== n || B2.shape[0] !== nb || B2.shape[1] !== bs || B1.shape[2] !== bs || B2.shape[2] !== bs) {
      throw new RangeError(`monarchApplyTf: factors [${B1.shape}] / [${B2.shape}] do not fit x [${x.shape}]`);
    }
    // Step 1, batched over blocks: U[j, i, r] = Σ_c X[i, j·bs + c] · B1[j, r, c].
    const xBlocks = tf.transpose(tf.reshape(x, [rows, nb, bs]), [1, 0, 2]);
    const u = tf.matMul(xBlocks, tf.transpose(B1, [0, 2, 1]));
    // Step 2: u of row i is U[:, i, :] flattened (index j·bs + r = p·nb + q); v[q, i, p] = u_i[p·nb + q].
    const uRows = tf.reshape(tf.transpose(u, [1, 0, 2]), [rows, bs, nb]);
    const v = tf.transpose(uRows, [2, 0, 1]);
    // Step 3: W[q, i, r] = Σ_p V[q, i, p] · B2[q, r, p].
    const w = tf.matMul(v, tf.transpose(B2, [0, 2, 1]));
    // Step 4: y_i[r·nb + q] = W[q, i, r].
    return tf.reshape(tf.transpose(w, [1, 2, 0]), [rows, n]) as tf.Tensor2D;
  });
}
