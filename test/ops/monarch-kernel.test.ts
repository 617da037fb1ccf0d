// The WebAssembly block product behind the Monarch product (block-matmul.ts) and the reusable
// MonarchProduct: bit-identical to the plain float64 loop, tiles and tails, strides, bounds,
// and the Monarch product against the explicit factor chain.
import { describe, expect, it } from 'vitest';
import { BlockMatmul, COLUMN_STRIP } from '../../src/ops/block-matmul.js';
import { MonarchProduct, monarchBlocks, monarchMultiply } from '../../src/ops/monarch.js';
import { Rng } from '../../src/util/rng.js';
import { denseMonarch, matvec, maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

/** C[r][t] = Σ_κ A[r][κ]·B[κ][t], summed from 0 in κ order: the loop the kernel must reproduce bit for bit. */
function scalarProduct(v: Float64Array, a: number, b: number, bStride: number, m: number, k: number, cols: number): Float64Array {
  const out = new Float64Array(m * cols);
  for (let r = 0; r < m; r++) {
    for (let t = 0; t < cols; t++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += v[a + r * k + q]! * v[b + q * bStride + t]!;
      out[r * cols + t] = s;
    }
  }
  return out;
}

describe('BlockMatmul.product', () => {
  it('equals the scalar float64 loop bit for bit: full 3-row tiles, tails, strides, several strips', () => {
    const rng = new Rng(21);
    const kernel = BlockMatmul.get();
    for (const [m, k, cols] of [[1, 1, 8], [2, 3, 8], [3, 3, 16], [4, 5, 24], [7, 11, 8], [33, 33, 64], [8, 8, 40]] as const) {
      const bStride = cols + 3 * COLUMN_STRIP + 5; // rows of B farther apart than cols, not aligned
      const cStride = cols + 9;
      const a = 3;
      const b = a + m * k + 1;
      const c = b + k * bStride + 2;
      const end = c + m * cStride + cols;
      kernel.reserve(end);
      const v = kernel.f64View(0, end);
      for (let i = 0; i < end; i++) v[i] = 2 * rng.next() - 1;
      const want = scalarProduct(v, a, b, bStride, m, k, cols);
      const untouched = Float64Array.from(v);
      kernel.product(a, b, bStride, c, cStride, m, k, cols);
      const got = kernel.f64View(0, end);
      for (let r = 0; r < m; r++) {
        for (let t = 0; t < cols; t++) expect(Object.is(got[c + r * cStride + t], want[r * cols + t]), `m=${m} k=${k} cols=${cols} [${r}][${t}]`).toBe(true);
      }
      // Nothing outside the m rows × cols of C changed (A, B, the gaps between C's rows).
      for (let i = 0; i < end; i++) {
        const inC = i >= c && (i - c) % cStride < cols && Math.floor((i - c) / cStride) < m;
        if (!inC) expect(got[i], `element ${i} outside C`).toBe(untouched[i]);
      }
    }
  });

  it('is exact on small integers (a hand-checkable 2×2 · 2×8 case)', () => {
    const kernel = BlockMatmul.get();
    kernel.reserve(64);
    const v = kernel.f64View(0, 64);
    v.fill(0);
    v.set([1, 2, 3, 4], 0); // A = [[1,2],[3,4]]
    v.set([1, 0, 0, 0, 0, 0, 0, 5], 8); // B row 0
    v.set([0, 1, 0, 0, 0, 0, 0, 1], 16); // B row 1
    kernel.product(0, 8, 8, 32, 8, 2, 2, 8);
    expect(Array.from(kernel.f64View(32, 16))).toEqual([1, 2, 0, 0, 0, 0, 0, 7, /**/ 3, 4, 0, 0, 0, 0, 0, 19]);
  });

  it('rejects column counts off the strip and operands outside its memory', () => {
    const kernel = BlockMatmul.get();
    kernel.reserve(1024);
    expect(() => kernel.product(0, 16, 8, 64, 8, 2, 2, 7)).toThrow(RangeError);
    expect(() => kernel.product(0, 16, 8, 64, 8, 0, 2, 8)).toThrow(RangeError);
    expect(() => kernel.product(0, 16, 8, 1e9, 8, 2, 2, 8)).toThrow(RangeError);
  });
});

describe('MonarchProduct', () => {
  it('applies M to several column blocks with the factors loaded once (n = 2064, nb = 43, bs = 48)', () => {
    const rng = new Rng(22);
    const n = 2064;
    const { nb, bs } = monarchBlocks(n);
    const B1 = randomArray(rng, nb * bs * bs);
    const B2 = randomArray(rng, nb * bs * bs);
    const ref = denseMonarch(B1, B2, nb, bs);
    const product = new MonarchProduct(B1, B2, n, 13);
    expect(product.stride).toBe(16);
    for (const cols of [13, 5]) {
      const X = randomArray(rng, n * cols);
      const input = product.input();
      for (let i = 0; i < n; i++) for (let t = 0; t < cols; t++) input[i * product.stride + t] = X[i * cols + t]!;
      const Y = product.multiply(cols);
      for (let t = 0; t < cols; t++) {
        const y = matvec(ref, Float64Array.from({ length: n }, (_, i) => X[i * cols + t]!));
        const got = Float64Array.from({ length: n }, (_, i) => Y[i * product.stride + t]!);
        expect(maxAbsDiff(got, y)).toBeLessThan(1e-12 * maxAbs(y));
      }
    }
  });

  it('gives monarchMultiply’s results bit for bit, and refuses use after another product took the memory', () => {
    const rng = new Rng(23);
    const n = 66;
    const { nb, bs } = monarchBlocks(n);
    const B1 = randomArray(rng, nb * bs * bs);
    const B2 = randomArray(rng, nb * bs * bs);
    const X = randomArray(rng, n * 3);
    const product = new MonarchProduct(B1, B2, n, 3);
    const input = product.input();
    for (let i = 0; i < n; i++) for (let t = 0; t < 3; t++) input[i * product.stride + t] = X[i * 3 + t]!;
    const Y = product.multiply();
    const rows = Array.from({ length: n }, (_, i) => Array.from(Y.subarray(i * product.stride, i * product.stride + 3)));
    const direct = monarchMultiply(B1, B2, n, X, 3); // lays out its own product
    expect(Array.from(direct)).toEqual(rows.flat());
    expect(() => product.multiply()).toThrow(/another Monarch product/);
    expect(() => product.input()).toThrow(/another Monarch product/);
    expect(() => new MonarchProduct(B1, B2, n, 3).multiply(4)).toThrow(RangeError);
  });

  it('propagates a non-finite input like M·x does (0·Inf is NaN; no entry of M is skipped)', () => {
    // n = 4, nb = bs = 2; B1 block 0 = [[1,0],[0,1]], block 1 = 0; B2 = identity blocks.
    const B1 = Float32Array.of(1, 0, 0, 1, 0, 0, 0, 0);
    const B2 = Float32Array.of(1, 0, 0, 1, 1, 0, 0, 1);
    const y = monarchMultiply(B1, B2, 4, Float64Array.of(1, 2, Infinity, 4), 1);
    // u = [1, 2, 0·Inf + 0·4, 0·Inf + 0·4] = [1, 2, NaN, NaN]; v_0 = [1, NaN], v_1 = [2, NaN];
    // w_0[0] = 1·1 + 0·NaN = NaN, and so on: every output is NaN, as in the dense M·x.
    expect(Array.from(y)).toEqual([NaN, NaN, NaN, NaN]);
  });
});
