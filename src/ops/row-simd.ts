/**
 * The row sites' element-wise passes (site-kernels.ts) as WebAssembly SIMD working directly on
 * the wasm backend's own memory (its tensors stay where they are): a few hundred bytes
 * assembled here, like block-matmul.ts, and instantiated against the backend's
 * WebAssembly.Memory. In JavaScript these passes run at ≈ 2 ns per element on the development
 * VM; four float32 lanes per instruction take them to memory speed.
 *
 *   scaleAddRows(out, src, add, coef, lines)  out[lines_i] = coef_i · src[lines_i] + add_i
 *   scaleRows(out, src, coef, lines)          out[lines_i] = coef_i · src[lines_i]
 *   dotRows(out, a, b, lines)                 out_i = Σ_c a[lines_i][c] · b[lines_i][c]
 *
 * Rows are C float32 values long, C a multiple of 4 (callers check `supports`). Products and
 * sums of the scaling round in float32 as tfjs's own kernels do (the JavaScript loops round
 * once from float64, so the two differ in the last bit at most); the dot products accumulate
 * float32 products in float64, as the JavaScript loop's sums do.
 */
import {
  I32, MODULE_HEADER, V128, countedLoop, i32Const as i32, localGet as get, localSet as set, memarg, memoryBoundModule, name, op, section, simd, simdOp, uleb,
  v128Load as load, v128Store as store, vector, type WasmMemory,
} from './wasm-encoding.js';


/**
 * for i in 0..k: [perRow]; for c in 0..C·4 step 16: [perVector]; [afterRow] — with locals i, row
 * (byte offset of line lines[i]), c (byte offset in the row) and end (C·4) at the given indices.
 */
function rowLoop(L: { lines: number; k: number; C: number; i: number; row: number; c: number; end: number }, perRow: number[], perVector: number[], afterRow: number[]): number[] {
  return [
    ...get(L.C), ...i32(4), op.i32Mul, ...set(L.end),
    ...countedLoop(L.i, L.k, 1, [
      ...get(L.lines), ...get(L.i), ...i32(4), op.i32Mul, op.i32Add, op.i32Load, ...memarg(2, 0), ...get(L.end), op.i32Mul, ...set(L.row),
      ...perRow,
      ...countedLoop(L.c, L.end, 16, perVector),
      ...afterRow,
    ]),
    op.end,
  ];
}

const at = (base: number, row: number, c: number) => [...get(base), ...get(row), op.i32Add, ...get(c), op.i32Add];

/** scaleAddRows(out, src, add, coef, lines, k, C) and, without `add`, scaleRows(out, src, coef, lines, k, C). */
function scaleBody(withAdd: boolean): number[] {
  const p = withAdd ? { out: 0, src: 1, add: 2, coef: 3, lines: 4, k: 5, C: 6 } : { out: 0, src: 1, add: -1, coef: 2, lines: 3, k: 4, C: 5 };
  const first = withAdd ? 7 : 6;
  const L = { lines: p.lines, k: p.k, C: p.C, i: first, row: first + 1, c: first + 2, end: first + 3 };
  const addRow = first + 4; // i32: add + i·C·4
  const s = first + 5; // v128: coef_i in every lane
  const perRow = [
    ...get(p.coef), ...get(L.i), ...i32(4), op.i32Mul, op.i32Add, op.f32Load, ...memarg(2, 0), ...simd(simdOp.f32x4Splat), ...set(s),
    ...(withAdd ? [...get(p.add), ...get(L.i), ...get(L.end), op.i32Mul, op.i32Add, ...set(addRow)] : []),
  ];
  const perVector = [
    ...at(p.out, L.row, L.c),
    ...get(s), ...at(p.src, L.row, L.c), ...load, ...simd(simdOp.f32x4Mul),
    ...(withAdd ? [...get(addRow), ...get(L.c), op.i32Add, ...load, ...simd(simdOp.f32x4Add)] : []),
    ...store,
  ];
  const locals = vector([[...uleb(5), I32], [...uleb(1), V128]]);
  return [...locals, ...rowLoop(L, perRow, perVector, [])];
}

/** dotRows(out, a, b, lines, k, C). */
function dotBody(): number[] {
  const p = { out: 0, a: 1, b: 2, lines: 3, k: 4, C: 5 };
  const L = { lines: p.lines, k: p.k, C: p.C, i: 6, row: 7, c: 8, end: 9 };
  const acc = 10; // v128: two float64 partial sums
  const prod = 11; // v128: four float32 products
  const highHalf = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
  const perRow = [...simd(simdOp.v128Const, ...new Array<number>(16).fill(0)), ...set(acc)];
  const perVector = [
    ...at(p.a, L.row, L.c), ...load, ...at(p.b, L.row, L.c), ...load, ...simd(simdOp.f32x4Mul), ...set(prod),
    ...get(acc), ...get(prod), ...simd(simdOp.f64x2PromoteLowF32x4), ...simd(simdOp.f64x2Add),
    ...get(prod), ...get(prod), ...simd(simdOp.i8x16Shuffle, ...highHalf), ...simd(simdOp.f64x2PromoteLowF32x4), ...simd(simdOp.f64x2Add),
    ...set(acc),
  ];
  const afterRow = [
    ...get(p.out), ...get(L.i), ...i32(4), op.i32Mul, op.i32Add,
    ...get(acc), ...simd(simdOp.f64x2ExtractLane, 0), ...get(acc), ...simd(simdOp.f64x2ExtractLane, 1), op.f64Add, op.f32DemoteF64,
    op.f32Store, ...memarg(2, 0),
  ];
  const locals = vector([[...uleb(4), I32], [...uleb(2), V128]]);
  return [...locals, ...rowLoop(L, perRow, perVector, afterRow)];
}

function moduleBytes(): Uint8Array {
  const sig = (n: number) => [0x60, ...vector(new Array<number[]>(n).fill([I32])), 0];
  const bodies = [scaleBody(true), scaleBody(false), dotBody()];
  return Uint8Array.from([
    ...MODULE_HEADER,
    ...section(1, vector([sig(7), sig(6)])),
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]])), // memory of any size, imported
    ...section(3, vector([[0], [1], [1]])),
    ...section(7, vector([[...name('scaleAddRows'), 0x00, 0], [...name('scaleRows'), 0x00, 1], [...name('dotRows'), 0x00, 2]])),
    ...section(10, vector(bodies.map((b) => [...uleb(b.length), ...b]))),
  ]);
}

type Fn = (...args: number[]) => void;

/** The three passes bound to one WebAssembly memory; pointers are byte offsets into it. */
export interface RowSimd {
  scaleAddRows(out: number, src: number, add: number, coef: number, lines: number, k: number, C: number): void;
  scaleRows(out: number, src: number, coef: number, lines: number, k: number, C: number): void;
  dotRows(out: number, a: number, b: number, lines: number, k: number, C: number): void;
}

/** The passes for `memory` (compiled once, instantiated once per memory). */
export const rowSimd: (memory: WasmMemory) => RowSimd = memoryBoundModule(moduleBytes, (e) => ({
  scaleAddRows: e.scaleAddRows as Fn, scaleRows: e.scaleRows as Fn, dotRows: e.dotRows as Fn,
}));

/** Rows of C values can take the SIMD passes (whole vectors, no tail). */
export const rowSimdSupports = (C: number): boolean => C > 0 && C % 4 === 0;
