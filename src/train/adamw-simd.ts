/**
 * One AdamW step as a WebAssembly SIMD pass over the wasm backend's own memory: each float32
 * of the parameter, its gradient and both moments is read once and the three results written
 * once, four lanes per instruction. As tfjs operations (adamw.ts) the same step is about twelve
 * element-wise kernels, each a pass over the whole tensor, and a masked parameter adds two
 * broadcast `where`s — on the ~10M-parameter benchmark the optimizer took ≈ 78 ms of a `vanilla`
 * step and ≈ 760 ms of a `structured` one (docs/benchmarks.md, "Training").
 *
 *   adamw(p, g, m, v, pOut, mOut, vOut, rows, cols, keep, keepMode, β1, 1−β1, β2, 1−β2, decay, √c2, ε, step)
 *
 * per element, in the order and float32 rounding of adamw.ts's operations (so the bits equal
 * theirs: WebAssembly's f32x4 add, sub, mul, div and sqrt round exactly as float32 scalars do):
 *
 *   g' = keep ? g : 0
 *   m' = m·β1 + g'·(1−β1)          v' = v·β2 + (g'·g')·(1−β2)
 *   u  = p·decay − (m' / (√v' / √c2 + ε))·step
 *   p' = keep ? u : p
 *
 * `keep` holds int32 −1 (trained) or 0 (frozen) per row (keepMode 1) or per column (keepMode 2)
 * of the [rows, cols] parameter, or nothing (keepMode 0). cols must be a multiple of 4 (the
 * caller checks `adamwSimdSupports`); pointers are byte offsets into the memory.
 */
import {
  I32, MODULE_HEADER, V128, countedLoop, i32Const as i32, localGet as get, localSet as set, memarg, memoryBoundModule, name, op, section, simd, simdOp, uleb,
  v128Load as load, v128Store as store, vector, type WasmMemory,
} from '../ops/wasm-encoding.js';

const F32 = 0x7d;
const f32x4 = (code: number) => simd(code);

// Parameters, then locals, by index.
const P = { p: 0, g: 1, m: 2, v: 3, pOut: 4, mOut: 5, vOut: 6, rows: 7, cols: 8, keep: 9, mode: 10, b1: 11, c1: 12, b2: 13, c2: 14, decay: 15, sc2: 16, eps: 17, step: 18 } as const;
const L = { r: 19, c: 20, rowByte: 21, end: 22, off: 23, B1: 24, C1: 25, B2: 26, C2: 27, DEC: 28, SC2: 29, EPS: 30, STEP: 31, K: 32, G: 33, M: 34, V: 35, Pv: 36 } as const;

function body(): number[] {
  const splat = (from: number, to: number) => [...get(from), ...f32x4(simdOp.f32x4Splat), ...set(to)];
  const at = (base: number) => [...get(base), ...get(L.off), op.i32Add];
  const ifMode = (mode: number, then: number[]) => [...get(P.mode), ...i32(mode), op.i32Eq, op.if, op.blockTypeEmpty, ...then, op.end];
  const perVector = [
    ...get(L.rowByte), ...get(L.c), op.i32Add, ...set(L.off),
    ...ifMode(2, [...get(P.keep), ...get(L.c), op.i32Add, ...load, ...set(L.K)]),
    ...at(P.g), ...load, ...get(L.K), ...simd(simdOp.v128And), ...set(L.G),
    // m' = m·β1 + g'·(1−β1)
    ...at(P.m), ...load, ...get(L.B1), ...f32x4(simdOp.f32x4Mul), ...get(L.G), ...get(L.C1), ...f32x4(simdOp.f32x4Mul), ...f32x4(simdOp.f32x4Add), ...set(L.M),
    ...at(P.mOut), ...get(L.M), ...store,
    // v' = v·β2 + (g'·g')·(1−β2)
    ...at(P.v), ...load, ...get(L.B2), ...f32x4(simdOp.f32x4Mul), ...get(L.G), ...get(L.G), ...f32x4(simdOp.f32x4Mul), ...get(L.C2), ...f32x4(simdOp.f32x4Mul), ...f32x4(simdOp.f32x4Add), ...set(L.V),
    ...at(P.vOut), ...get(L.V), ...store,
    // p' = keep ? p·decay − (m' / (√v' / √c2 + ε))·step : p
    ...at(P.p), ...load, ...set(L.Pv),
    ...at(P.pOut),
    ...get(L.Pv), ...get(L.DEC), ...f32x4(simdOp.f32x4Mul),
    ...get(L.M), ...get(L.V), ...f32x4(simdOp.f32x4Sqrt), ...get(L.SC2), ...f32x4(simdOp.f32x4Div), ...get(L.EPS), ...f32x4(simdOp.f32x4Add), ...f32x4(simdOp.f32x4Div),
    ...get(L.STEP), ...f32x4(simdOp.f32x4Mul), ...f32x4(simdOp.f32x4Sub),
    ...get(L.Pv), ...get(L.K), ...simd(simdOp.v128Bitselect),
    ...store,
  ];
  const code = [
    ...splat(P.b1, L.B1), ...splat(P.c1, L.C1), ...splat(P.b2, L.B2), ...splat(P.c2, L.C2),
    ...splat(P.decay, L.DEC), ...splat(P.sc2, L.SC2), ...splat(P.eps, L.EPS), ...splat(P.step, L.STEP),
    ...get(P.cols), ...i32(4), op.i32Mul, ...set(L.end),
    ...countedLoop(L.r, P.rows, 1, [
      ...get(L.r), ...get(L.end), op.i32Mul, ...set(L.rowByte),
      // Every lane kept, unless the row's own flag says otherwise.
      ...simd(simdOp.v128Const, ...new Array<number>(16).fill(0xff)), ...set(L.K),
      ...ifMode(1, [...get(P.keep), ...get(L.r), ...i32(4), op.i32Mul, op.i32Add, op.i32Load, ...memarg(2, 0), ...simd(simdOp.i32x4Splat), ...set(L.K)]),
      ...countedLoop(L.c, L.end, 16, perVector),
    ]),
    op.end,
  ];
  const locals = vector([[...uleb(5), I32], [...uleb(13), V128]]);
  return [...locals, ...code];
}

function moduleBytes(): Uint8Array {
  const params = [...new Array<number>(11).fill(I32), ...new Array<number>(8).fill(F32)];
  const b = body();
  return Uint8Array.from([
    ...MODULE_HEADER,
    ...section(1, vector([[0x60, ...uleb(params.length), ...params, 0]])),
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]])), // memory of any size, imported
    ...section(3, vector([[0]])),
    ...section(7, vector([[...name('adamw'), 0x00, 0]])),
    ...section(10, vector([[...uleb(b.length), ...b]])),
  ]);
}

export type AdamwSimd = (
  p: number, g: number, m: number, v: number, pOut: number, mOut: number, vOut: number,
  rows: number, cols: number, keep: number, keepMode: 0 | 1 | 2,
  beta1: number, oneMinusBeta1: number, beta2: number, oneMinusBeta2: number, decay: number, sqrtCorrection2: number, epsilon: number, stepSize: number,
) => void;

/** The pass bound to `memory` (compiled once, instantiated once per memory). */
export const adamwSimd: (memory: WasmMemory) => AdamwSimd = memoryBoundModule(moduleBytes, (e) => e.adamw as AdamwSimd);

/** Whether a [rows, cols] parameter can take the pass (whole vectors per row). */
export const adamwSimdSupports = (cols: number): boolean => cols > 0 && cols % 4 === 0;
