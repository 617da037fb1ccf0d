/**
 * Effective rank (APEX-METHOD §6, Roy & Vetterli): erank(W) = exp(−Σ pᵢ ln pᵢ), pᵢ = σᵢ / Σσ,
 * over the singular values of W, in float64. A zero matrix has effective rank 0 by convention.
 *
 * Singular values: Householder bidiagonalisation on a flat row-major Float64Array (every inner
 * loop runs over contiguous memory), then the bidiagonal's singular values as the non-negative
 * eigenvalues of its Golub–Kahan tridiagonal form (zero diagonal, off-diagonal d₀ e₀ d₁ e₁ …),
 * found by implicit-shift QL. Values only: no singular vectors are formed. Error is at the
 * level of float64 rounding times ‖W‖₂ per value.
 *
 * Cost, one thread, Node 20 on this project's 2-core dev machine while other jobs ran (load
 * 4–10, so expect less on an idle core); ml-matrix's SingularValueDecomposition without vectors
 * in the same runs in brackets: 256×256 0.20 s [0.59 s], 1024×1024 5.5 s [16.3 s],
 * 2048×2048 57 s, 2048×5632 (TinyLlama-1.1B gate/up/down) 247 s. Time grows as
 * 4·m·n² − 4n³/3 flops for m ≥ n (bidiagonalisation dominates; the QL step is O(n²)), and
 * beyond ~1024 the trailing matrix leaves the caches, so memory traffic sets the pace.
 */

/** Singular values of a rows×cols row-major matrix, descending, in float64. */
export function singularValues(W: ArrayLike<number>, rows: number, cols: number): Float64Array {
  if (W.length !== rows * cols) throw new RangeError(`singularValues: ${W.length} values for a ${rows}×${cols} matrix`);
  // Work on the orientation with m ≥ n; singular values do not change under transposition.
  const m = Math.max(rows, cols);
  const n = Math.min(rows, cols);
  if (n === 0) return new Float64Array(0);
  const A = new Float64Array(m * n);
  if (rows >= cols) {
    for (let i = 0; i < W.length; i++) A[i] = W[i]!;
  } else {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) A[c * n + r] = W[r * cols + c]!;
  }
  for (let i = 0; i < A.length; i++) {
    if (!Number.isFinite(A[i]!)) throw new RangeError('singularValues: matrix holds NaN or Inf');
  }
  const { d, e } = bidiagonalize(A, m, n);
  return bidiagonalSingularValues(d, e);
}

/**
 * Golub–Kahan Householder bidiagonalisation of A (m×n, m ≥ n, row-major, overwritten):
 * returns the diagonal d [n] and superdiagonal e [n−1] of an upper-bidiagonal B with the
 * same singular values.
 *
 * One pass over the trailing rows per step: while a row is in cache it gets step k's left
 * reflector, then step k's right reflector, and contributes to step k+1's left-reflector
 * product s = Σᵢ xᵢ·A[i, :] (x = the next column; the reflector's shift of x's first entry is
 * corrected afterwards). Memory traffic, not arithmetic, limits the plain three-pass version.
 */
function bidiagonalize(A: Float64Array, m: number, n: number): { d: Float64Array; e: Float64Array } {
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(0, n - 1));
  const x = new Float64Array(m);
  let sRaw = new Float64Array(n);
  let sNext = new Float64Array(n);
  const s = new Float64Array(n);
  const u = new Float64Array(n);
  // s for step 0: Σᵢ A[i,0]·A[i,:].
  for (let i = 0; i < m; i++) {
    const xi = A[i * n]!;
    if (xi === 0) continue;
    const row = i * n;
    for (let j = 1; j < n; j++) sRaw[j]! += xi * A[row + j]!;
  }
  for (let k = 0; k < n; k++) {
    // Left reflector H = I − β·v·vᵀ on column k, rows k..m−1: v = x − α·e_k.
    let below = 0;
    for (let i = k + 1; i < m; i++) {
      const xi = A[i * n + k]!;
      x[i] = xi;
      below += xi * xi;
    }
    const x0 = A[k * n + k]!;
    x[k] = x0;
    const norm2 = below + x0 * x0;
    const alpha = norm2 === 0 ? 0 : (x0 >= 0 ? -1 : 1) * Math.sqrt(norm2);
    d[k] = alpha;
    if (k + 1 >= n) break;
    const vv = below + (x0 - alpha) ** 2;
    const beta = vv > 0 ? 2 / vv : 0;
    const v0 = x0 - alpha;
    const rowK = k * n;
    // s[j] = Σᵢ vᵢ·A[i,j] for j > k, and row k's left update.
    for (let j = k + 1; j < n; j++) s[j] = sRaw[j]! - alpha * A[rowK + j]!;
    if (beta !== 0) for (let j = k + 1; j < n; j++) A[rowK + j]! -= beta * v0 * s[j]!;
    // Right reflector G = I − γ·u·uᵀ on row k, columns k+1..n−1 (none needed for the last pair).
    let gamma = 0;
    if (k + 2 < n) {
      let rest = 0;
      for (let j = k + 2; j < n; j++) rest += A[rowK + j]! ** 2;
      const y0 = A[rowK + k + 1]!;
      const rn2 = rest + y0 * y0;
      const ralpha = rn2 === 0 ? 0 : (y0 >= 0 ? -1 : 1) * Math.sqrt(rn2);
      e[k] = ralpha;
      const uu = rest + (y0 - ralpha) ** 2;
      if (uu > 0) {
        gamma = 2 / uu;
        for (let j = k + 2; j < n; j++) u[j] = A[rowK + j]!;
        u[k + 1] = y0 - ralpha;
      }
    } else {
      e[k] = A[rowK + k + 1]!;
    }
    sNext.fill(0, k + 2, n);
    for (let i = k + 1; i < m; i++) {
      const row = i * n;
      const f = beta * x[i]!;
      if (f !== 0) for (let j = k + 1; j < n; j++) A[row + j]! -= f * s[j]!;
      if (gamma !== 0) {
        let dot = 0;
        for (let j = k + 1; j < n; j++) dot += A[row + j]! * u[j]!;
        const g = gamma * dot;
        if (g !== 0) for (let j = k + 1; j < n; j++) A[row + j]! -= g * u[j]!;
      }
      const xn = A[row + k + 1]!;
      if (xn !== 0) for (let j = k + 2; j < n; j++) sNext[j]! += xn * A[row + j]!;
    }
    const tmp = sRaw;
    sRaw = sNext;
    sNext = tmp;
  }
  return { d, e };
}

/** Singular values of the upper-bidiagonal (d, e), descending. */
function bidiagonalSingularValues(d: Float64Array, e: Float64Array): Float64Array {
  const n = d.length;
  const size = 2 * n;
  const diag = new Float64Array(size);
  const off = new Float64Array(size);
  let scale = 0;
  for (let i = 0; i < n; i++) {
    off[2 * i] = d[i]!;
    if (i < n - 1) off[2 * i + 1] = e[i]!;
    scale = Math.max(scale, Math.abs(d[i]!) + (i < n - 1 ? Math.abs(e[i]!) : 0) + (i > 0 ? Math.abs(e[i - 1]!) : 0));
  }
  symmetricTridiagonalEigenvalues(diag, off, scale * Number.EPSILON);
  const sorted = Array.from(diag).sort((x, y) => y - x);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.max(0, sorted[i]!);
  return out;
}

/**
 * Eigenvalues of a symmetric tridiagonal matrix by implicit-shift QL (values only), in place:
 * `diag` [n] becomes the eigenvalues; `off[i]` couples i and i+1 (off[n−1] unused). An
 * off-diagonal entry counts as zero when it is below `absTol` or negligible next to its
 * diagonal neighbours.
 */
function symmetricTridiagonalEigenvalues(diag: Float64Array, off: Float64Array, absTol: number): void {
  const n = diag.length;
  off[n - 1] = 0;
  for (let l = 0; l < n; l++) {
    for (let iter = 0; ; iter++) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(diag[m]!) + Math.abs(diag[m + 1]!);
        if (Math.abs(off[m]!) <= absTol || Math.abs(off[m]!) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (iter === 200) throw new Error('symmetric tridiagonal QL did not converge');
      let g = (diag[l + 1]! - diag[l]!) / (2 * off[l]!);
      let r = Math.hypot(g, 1);
      g = diag[m]! - diag[l]! + off[l]! / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * off[i]!;
        const b = c * off[i]!;
        r = Math.hypot(f, g);
        off[i + 1] = r;
        if (r === 0) {
          diag[i + 1]! -= p;
          off[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = diag[i + 1]! - p;
        r = (diag[i]! - g) * s + 2 * c * b;
        p = s * r;
        diag[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      diag[l]! -= p;
      off[l] = g;
      off[m] = 0;
    }
  }
}

/** exp of the Shannon entropy of σ / Σσ; 0 for an all-zero spectrum. */
export function effectiveRankFromSingularValues(sigma: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < sigma.length; i++) total += sigma[i]!;
  if (total === 0) return 0;
  let h = 0;
  for (let i = 0; i < sigma.length; i++) {
    const p = sigma[i]! / total;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}

/** Effective rank of a rows×cols row-major matrix (e.g. a weight [out, in] or ΔW). */
export function effectiveRank(W: ArrayLike<number>, rows: number, cols: number): number {
  return effectiveRankFromSingularValues(singularValues(W, rows, cols));
}
