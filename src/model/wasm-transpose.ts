/**
 * Transpose of the last two axes on the wasm backend as WebAssembly SIMD in 4 × 4 tiles, on the
 * backend's own memory (assembled here like ops/row-simd.ts).
 *
 * Why: a training step transposes around every product (layer-math.ts `linear` computes
 * (W·xᵀ)ᵀ so that XNNPACK sees untransposed operands; wasm-training-kernels.ts's matMul
 * gradient transposes explicitly), and tfjs-wasm's Transpose ran at 1–5 GB/s on this VM: on the
 * ~10M-parameter benchmark model, 95 ms of a 720 ms `vanilla` step went to ≈ 400 transposes,
 * 30 ms of it to the lm_head's two [8192, 256] ones (docs/benchmarks.md, "Transposes").
 *
 * A tile is four 16-byte loads from four source rows, eight lane shuffles and four 16-byte stores
 * to four destination rows; tiles are walked in 64 × 64 blocks so that a block's source and
 * destination stay in cache. Elements are moved as bits (4-byte types: float32, int32), so
 * the result is exactly tfjs's. Rows and columns past the last multiple of 4 are copied in
 * JavaScript.
 */
import type * as tf from '@tensorflow/tfjs';
import {
  I32, MODULE_HEADER, V128, countedLoop, i32Const as i32, localGet as get, localSet as set, memoryBoundModule, name, op, section, simd, simdOp, uleb,
  v128Load as load, v128Store as store, vector, type WasmMemory,
} from '../ops/wasm-encoding.js';

/** tile(src, dst, rows, cols, srcStride, dstStride): rows × cols (multiples of 4) of src into dst transposed; strides in bytes. */
function tileBody(): number[] {
  const p = { src: 0, dst: 1, rows: 2, cols: 3, sStride: 4, dStride: 5 };
  const L = { r: 6, c: 7, sp: 8, dp: 9 };
  const v = { a: 10, b: 11, c: 12, d: 13, t0: 14, t1: 15, t2: 16, t3: 17 };
  const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
  // Lanes (4 bytes each) of two vectors x (bytes 0–15) and y (16–31).
  const interleaveLow = [...range(0, 4), ...range(16, 4), ...range(4, 4), ...range(20, 4)]; // x0 y0 x1 y1
  const interleaveHigh = [...range(8, 4), ...range(24, 4), ...range(12, 4), ...range(28, 4)]; // x2 y2 x3 y3
  const lowHalves = [...range(0, 8), ...range(16, 8)]; // x0 x1 y0 y1
  const highHalves = [...range(8, 8), ...range(24, 8)]; // x2 x3 y2 y3
  const shuffle = (x: number, y: number, lanes: number[]) => [...get(x), ...get(y), ...simd(simdOp.i8x16Shuffle, ...lanes)];
  const plusStrides = (base: number, stride: number, k: number) => [...get(base), ...Array.from({ length: k }, () => [...get(stride), op.i32Add]).flat()];
  const body = [
    ...countedLoop(L.r, p.rows, 4, [
      ...countedLoop(L.c, p.cols, 4, [
        // sp = src + r·srcStride + 4c; dp = dst + c·dstStride + 4r
        ...get(p.src), ...get(L.r), ...get(p.sStride), op.i32Mul, op.i32Add, ...get(L.c), ...i32(4), op.i32Mul, op.i32Add, ...set(L.sp),
        ...get(p.dst), ...get(L.c), ...get(p.dStride), op.i32Mul, op.i32Add, ...get(L.r), ...i32(4), op.i32Mul, op.i32Add, ...set(L.dp),
        ...plusStrides(L.sp, p.sStride, 0), ...load, ...set(v.a),
        ...plusStrides(L.sp, p.sStride, 1), ...load, ...set(v.b),
        ...plusStrides(L.sp, p.sStride, 2), ...load, ...set(v.c),
        ...plusStrides(L.sp, p.sStride, 3), ...load, ...set(v.d),
        ...shuffle(v.a, v.b, interleaveLow), ...set(v.t0), // a0 b0 a1 b1
        ...shuffle(v.a, v.b, interleaveHigh), ...set(v.t1), // a2 b2 a3 b3
        ...shuffle(v.c, v.d, interleaveLow), ...set(v.t2), // c0 d0 c1 d1
        ...shuffle(v.c, v.d, interleaveHigh), ...set(v.t3), // c2 d2 c3 d3
        ...plusStrides(L.dp, p.dStride, 0), ...shuffle(v.t0, v.t2, lowHalves), ...store, // a0 b0 c0 d0
        ...plusStrides(L.dp, p.dStride, 1), ...shuffle(v.t0, v.t2, highHalves), ...store,
        ...plusStrides(L.dp, p.dStride, 2), ...shuffle(v.t1, v.t3, lowHalves), ...store,
        ...plusStrides(L.dp, p.dStride, 3), ...shuffle(v.t1, v.t3, highHalves), ...store,
      ]),
    ]),
    op.end,
  ];
  return [...vector([[...uleb(4), I32], [...uleb(8), V128]]), ...body];
}

function moduleBytes(): Uint8Array {
  const body = tileBody();
  return Uint8Array.from([
    ...MODULE_HEADER,
    ...section(1, vector([[0x60, ...vector(new Array<number[]>(6).fill([I32])), 0]])),
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]])), // memory of any size, imported
    ...section(3, vector([[0]])),
    ...section(7, vector([[...name('tile'), 0x00, 0]])),
    ...section(10, vector([[...uleb(body.length), ...body]])),
  ]);
}

type Tile = (src: number, dst: number, rows: number, cols: number, srcStride: number, dstStride: number) => void;
const tileFor: (memory: WasmMemory) => Tile = memoryBoundModule(moduleBytes, (e) => e.tile as Tile);

/** Rows and columns of a block: its source and destination (2 × 16 KB) stay in the first-level cache. */
const BLOCK = 64;

/**
 * Writes the transpose of the rows × cols matrix of 4-byte elements at byte offset `src` of
 * `memory` to byte offset `dst` (which must not overlap it).
 */
export function transposeMatrix(memory: WasmMemory, src: number, dst: number, rows: number, cols: number): void {
  const rows4 = rows - (rows % 4);
  const cols4 = cols - (cols % 4);
  if (rows4 > 0 && cols4 > 0) {
    const tile = tileFor(memory);
    for (let c = 0; c < cols4; c += BLOCK) {
      for (let r = 0; r < rows4; r += BLOCK) {
        tile(src + 4 * (r * cols + c), dst + 4 * (c * rows + r), Math.min(BLOCK, rows4 - r), Math.min(BLOCK, cols4 - c), 4 * cols, 4 * rows);
      }
    }
  }
  if (rows4 === rows && cols4 === cols) return;
  // The remainder as bits (an Int32Array view: no float conversion touches NaN payloads).
  const heap = new Int32Array(memory.buffer);
  const s = src >>> 2;
  const d = dst >>> 2;
  for (let r = 0; r < rows; r++) {
    for (let c = r < rows4 ? cols4 : 0; c < cols; c++) heap[d + c * rows + r] = heap[s + r * cols + c]!;
  }
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } };
  wasm: { asm?: { memory?: WasmMemory } };
}

type TransposeArgs = { inputs: { x: tf.TensorInfo }; backend: WasmBackendLike; attrs: { perm: number[] } };

/** The permutation of `rank` axes that swaps the last two (the transpose of a batch of matrices). */
export function lastTwoSwappedPerm(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return perm;
}

/** Below this many elements tfjs's own kernel is as fast (the call costs more than the copy). */
const MIN_ELEMENTS = 4096;

/**
 * The wasm Transpose kernel: the SIMD tiles when the permutation swaps the last two axes (any
 * leading axes are a batch, both at least 4 long) of a float32 or int32 tensor on a plain
 * (unshared) memory, tfjs's kernel otherwise.
 */
export function transposeViaTiles(tfjsKernel: (args: TransposeArgs) => tf.TensorInfo): (args: TransposeArgs) => tf.TensorInfo {
  return (args) => {
    const { x } = args.inputs;
    const { perm } = args.attrs;
    const rank = x.shape.length;
    const swapsLastTwo = rank >= 2 && perm.join() === lastTwoSwappedPerm(rank).join();
    const size = x.shape.reduce((a, b) => a * b, 1);
    const memory = args.backend.wasm.asm?.memory;
    const shared = typeof SharedArrayBuffer !== 'undefined' && memory?.buffer instanceof SharedArrayBuffer;
    const rows = x.shape[rank - 2] ?? 0;
    const cols = x.shape[rank - 1] ?? 0;
    // Fewer than 4 rows or columns make no tile (all of it would be the JavaScript remainder).
    if (!swapsLastTwo || !(x.dtype === 'float32' || x.dtype === 'int32') || size < MIN_ELEMENTS || rows < 4 || cols < 4 || !memory || shared) return tfjsKernel(args);
    const out = args.backend.makeOutput([...x.shape.slice(0, -2), cols, rows], x.dtype);
    // Addresses after the allocation: it may have grown (and moved views of) the memory.
    const src = args.backend.dataIdMap.get(x.dataId).memoryOffset;
    const dst = args.backend.dataIdMap.get(out.dataId).memoryOffset;
    const matrix = 4 * rows * cols;
    for (let b = 0; b < size / (rows * cols); b++) transposeMatrix(memory, src + b * matrix, dst + b * matrix, rows, cols);
    return out;
  };
}
