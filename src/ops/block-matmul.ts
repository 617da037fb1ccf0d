/**
 * The one dense kernel behind the Monarch product (monarch.ts): C = A·B for a small square-ish
 * block A [m, k] and a wide row-major B [k, cols], in float64, as WebAssembly SIMD (f64x2).
 * Plain JavaScript runs this at well under 1 GFLOP/s; the kernel below runs at 7–9 GFLOP/s on
 * one core, which takes the Monarch products of `apex expand` from about 75% of its CPU time to
 * under 10% (docs/benchmarks.md, "Expansion (fusion)").
 *
 * The module is about 1 KB, assembled right here (no toolchain, no binary blob in the
 * repository), compiled synchronously on first use, with its own growable memory that callers
 * lay out through `BlockMatmul.f64View`. Every product is computed exactly as the scalar loop
 *     C[r][t] = ((0 + A[r][0]·B[0][t]) + A[r][1]·B[1][t]) + … + A[r][k−1]·B[k−1][t]
 * computes it (WebAssembly has no fused multiply-add in its base SIMD set, each lane rounds
 * like a JavaScript number), so results are bit-identical to that loop.
 *
 * Micro-tile: 3 rows of C × 8 columns (four f64x2 accumulators per row) held in registers
 * across the whole k loop, so each loaded B vector serves three rows; rows beyond a multiple
 * of 3 go through a one-row variant of the same loop. `cols` must be a multiple of
 * COLUMN_STRIP (callers pad their rows; a padding column of C depends only on the same
 * padding column of B, never on a real one).
 */

import { I32, MODULE_HEADER, V128, memarg, name, section, simd, sleb, uleb, vector, wasmApi, type WasmMemory } from './wasm-encoding.js';

/** Columns (f64) of one micro-tile: rows of B and C are processed in strips of this width. */
export const COLUMN_STRIP = 8;
const TILE_ROWS = 3;
const VECTORS_PER_ROW = COLUMN_STRIP / 2;
const F64_BYTES = 8;
const PAGE_BYTES = 65536;

const op = {
  loop: 0x03, end: 0x0b, brIf: 0x0d, localGet: 0x20, localSet: 0x21, localTee: 0x22,
  i32Const: 0x41, i32LtU: 0x49, i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, blockTypeEmpty: 0x40,
} as const;
const simdOp = { v128Load: 0x00, v128Load64Splat: 0x0a, v128Store: 0x0b, v128Const: 0x0c, f64x2Add: 0xf0, f64x2Mul: 0xf2 } as const;

/**
 * Function body of `product(a, b, bStride, c, cStride, m, k, cols)` for tiles of `rows` rows
 * (m must be a multiple of `rows`); pointers and strides in bytes, m, k, cols in elements.
 */
function productBody(rows: number): number[] {
  const P = { a: 0, b: 1, bStride: 2, c: 3, cStride: 4, m: 5, k: 6, cols: 7 };
  const L = { strip: 8, aTile: 9, cTile: 10, row: 11, bPtr: 12, left: 13, colsBytes: 14 };
  const coefPtr = (i: number) => 15 + i; // i32: A[row + i][κ]
  const acc = (i: number, j: number) => 15 + rows + i * VECTORS_PER_ROW + j; // v128 locals
  const coef = (i: number) => 15 + rows + rows * VECTORS_PER_ROW + i;
  const get = (l: number) => [op.localGet, ...uleb(l)];
  const set = (l: number) => [op.localSet, ...uleb(l)];
  const tee = (l: number) => [op.localTee, ...uleb(l)];
  const i32 = (v: number) => [op.i32Const, ...sleb(v)];
  const body: number[] = [];
  const emit = (...parts: number[][]) => { for (const p of parts) body.push(...p); };

  emit(get(P.cols), i32(F64_BYTES), [op.i32Mul], set(L.colsBytes), i32(0), set(L.strip));
  emit([op.loop, op.blockTypeEmpty]); // for each column strip
  emit(get(P.a), set(L.aTile), get(P.c), get(L.strip), [op.i32Add], set(L.cTile), i32(0), set(L.row));
  emit([op.loop, op.blockTypeEmpty]); // for each tile of `rows` rows
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < VECTORS_PER_ROW; j++) emit(simd(simdOp.v128Const, ...new Array<number>(16).fill(0)), set(acc(i, j)));
    emit(get(L.aTile), get(P.k), i32(F64_BYTES * i), [op.i32Mul], [op.i32Add], set(coefPtr(i)));
  }
  emit(get(P.b), get(L.strip), [op.i32Add], set(L.bPtr), get(P.k), set(L.left));
  emit([op.loop, op.blockTypeEmpty]); // for κ = 0 … k−1: acc[i] += A[i][κ] · B[κ][strip]
  for (let i = 0; i < rows; i++) emit(get(coefPtr(i)), simd(simdOp.v128Load64Splat, ...memarg(3, 0)), set(coef(i)));
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < VECTORS_PER_ROW; j++) {
      emit(get(acc(i, j)), get(coef(i)), get(L.bPtr), simd(simdOp.v128Load, ...memarg(4, 16 * j)), simd(simdOp.f64x2Mul), simd(simdOp.f64x2Add), set(acc(i, j)));
    }
  }
  for (let i = 0; i < rows; i++) emit(get(coefPtr(i)), i32(F64_BYTES), [op.i32Add], set(coefPtr(i)));
  emit(get(L.bPtr), get(P.bStride), [op.i32Add], set(L.bPtr));
  emit(get(L.left), i32(1), [op.i32Sub], tee(L.left), [op.brIf, 0], [op.end]);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < VECTORS_PER_ROW; j++) {
      emit(get(L.cTile), get(P.cStride), i32(i), [op.i32Mul], [op.i32Add], get(acc(i, j)), simd(simdOp.v128Store, ...memarg(4, 16 * j)));
    }
  }
  emit(get(L.aTile), get(P.k), i32(F64_BYTES * rows), [op.i32Mul], [op.i32Add], set(L.aTile));
  emit(get(L.cTile), get(P.cStride), i32(rows), [op.i32Mul], [op.i32Add], set(L.cTile));
  emit(get(L.row), i32(rows), [op.i32Add], tee(L.row), get(P.m), [op.i32LtU], [op.brIf, 0], [op.end]);
  emit(get(L.strip), i32(COLUMN_STRIP * F64_BYTES), [op.i32Add], tee(L.strip), get(L.colsBytes), [op.i32LtU], [op.brIf, 0], [op.end]);
  emit([op.end]);
  const locals = vector([[...uleb(7 + rows), I32], [...uleb(rows * VECTORS_PER_ROW + rows), V128]]);
  return [...locals, ...body];
}

function moduleBytes(): Uint8Array {
  const signature = [0x60, ...vector(new Array<number[]>(8).fill([I32])), 0];
  const bodies = [productBody(TILE_ROWS), productBody(1)];
  return Uint8Array.from([
    ...MODULE_HEADER,
    ...section(1, vector([signature])),
    ...section(3, vector([[0], [0]])),
    ...section(5, vector([[0x00, 1]])), // memory: 1 page minimum, no maximum
    ...section(7, vector([[...name('memory'), 0x02, 0], [...name('tiles'), 0x00, 0], [...name('rows'), 0x00, 1]])),
    ...section(10, vector(bodies.map((b) => [...uleb(b.length), ...b]))),
  ]);
}

type ProductFn = (a: number, b: number, bStride: number, c: number, cStride: number, m: number, k: number, cols: number) => void;


/**
 * The compiled kernel and its memory (one per thread). Offsets and strides are in float64
 * elements of that memory. Views from `f64View` stay valid until the next `reserve` that grows it.
 */
export class BlockMatmul {
  private static shared: BlockMatmul | undefined;
  private readonly memory: WasmMemory;
  private readonly tiles: ProductFn;
  private readonly rows: ProductFn;

  private constructor() {
    const instance = new wasmApi.Instance(new wasmApi.Module(moduleBytes()), {});
    this.memory = instance.exports.memory as WasmMemory;
    this.tiles = instance.exports.tiles as ProductFn;
    this.rows = instance.exports.rows as ProductFn;
  }

  /** The kernel of this thread, compiled on first use. */
  static get(): BlockMatmul {
    return (BlockMatmul.shared ??= new BlockMatmul());
  }

  /** Makes the memory hold at least `elements` float64 values (it never shrinks). */
  reserve(elements: number): void {
    const need = Math.ceil((elements * F64_BYTES) / PAGE_BYTES) - this.memory.buffer.byteLength / PAGE_BYTES;
    if (need > 0) this.memory.grow(need);
  }

  /** float64 view of `length` values at element `offset` (within what `reserve` made room for). */
  f64View(offset: number, length: number): Float64Array {
    return new Float64Array(this.memory.buffer, offset * F64_BYTES, length);
  }

  /**
   * C = A·B: A [m, k] contiguous at `a`; row κ of B at b + κ·bStride; row r of C at
   * c + r·cStride; rows of `cols` values, cols a positive multiple of COLUMN_STRIP. C must not
   * overlap A or B.
   */
  product(a: number, b: number, bStride: number, c: number, cStride: number, m: number, k: number, cols: number): void {
    if (m < 1 || k < 1 || cols < 1 || cols % COLUMN_STRIP !== 0) throw new RangeError(`block product: m=${m}, k=${k}, cols=${cols} (cols must be a positive multiple of ${COLUMN_STRIP})`);
    const end = Math.max(a + m * k, b + (k - 1) * bStride + cols, c + (m - 1) * cStride + cols);
    if (Math.min(a, b, c) < 0 || end * F64_BYTES > this.memory.buffer.byteLength) throw new RangeError('block product: operands outside the reserved memory');
    const tiled = m - (m % TILE_ROWS);
    const B = F64_BYTES;
    if (tiled > 0) this.tiles(a * B, b * B, bStride * B, c * B, cStride * B, tiled, k, cols);
    if (tiled < m) this.rows(a * B + tiled * k * B, b * B, bStride * B, c * B + tiled * cStride * B, cStride * B, m - tiled, k, cols);
  }
}
