/**
 * Independent dense references for the ops tests: the Monarch matrix assembled from explicit
 * block-diagonal and permutation matrices (never from the product under test), plain dense
 * matrix products, and seeded random arrays.
 */
import { Rng } from '../../src/util/rng.js';

/** Dense row-major matrix in float64. */
export interface Dense {
  readonly rows: number;
  readonly cols: number;
  readonly v: Float64Array;
}

export function matmul(A: Dense, B: Dense): Dense {
  if (A.cols !== B.rows) throw new Error('shape');
  const v = new Float64Array(A.rows * B.cols);
  for (let i = 0; i < A.rows; i++) {
    for (let k = 0; k < A.cols; k++) {
      const a = A.v[i * A.cols + k]!;
      if (a === 0) continue;
      for (let j = 0; j < B.cols; j++) v[i * B.cols + j]! += a * B.v[k * B.cols + j]!;
    }
  }
  return { rows: A.rows, cols: B.cols, v };
}

export function matvec(A: Dense, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(A.rows);
  for (let i = 0; i < A.rows; i++) {
    let s = 0;
    for (let k = 0; k < A.cols; k++) s += A.v[i * A.cols + k]! * x[k]!;
    y[i] = s;
  }
  return y;
}

/** blockdiag(B[0], …, B[nb−1]) for B stored [nb, bs, bs]. */
export function blockDiagonal(B: ArrayLike<number>, nb: number, bs: number): Dense {
  const n = nb * bs;
  const v = new Float64Array(n * n);
  for (let j = 0; j < nb; j++) {
    for (let r = 0; r < bs; r++) for (let c = 0; c < bs; c++) v[(j * bs + r) * n + j * bs + c] = B[j * bs * bs + r * bs + c]!;
  }
  return { rows: n, cols: n, v };
}

/**
 * The permutation "view a length-n vector as [rows, cols] row-major, transpose, flatten":
 * out[c·rows + r] = in[r·cols + c].
 */
export function transposePermutation(rows: number, cols: number): Dense {
  const n = rows * cols;
  const v = new Float64Array(n * n);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) v[(c * rows + r) * n + r * cols + c] = 1;
  return { rows: n, cols: n, v };
}

/** M = Perm'·BD2·Perm·BD1 with Perm = transpose of the [bs, nb] view, Perm' = of the [nb, bs] view. */
export function monarchFactorsDense(B1: ArrayLike<number>, B2: ArrayLike<number>, nb: number, bs: number): Dense[] {
  return [transposePermutation(nb, bs), blockDiagonal(B2, nb, bs), transposePermutation(bs, nb), blockDiagonal(B1, nb, bs)];
}

export function denseMonarch(B1: ArrayLike<number>, B2: ArrayLike<number>, nb: number, bs: number): Dense {
  const [perm2, bd2, perm1, bd1] = monarchFactorsDense(B1, B2, nb, bs);
  return matmul(perm2!, matmul(bd2!, matmul(perm1!, bd1!)));
}

export function randomArray(rng: Rng, n: number, scale = 1, offset = 0): Float32Array {
  return Float32Array.from({ length: n }, () => offset + scale * (2 * rng.next() - 1));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}
