/**
 * BatchMatMul on the wasm backend through XNNPACK in every case.
 *
 * tfjs-wasm gives a product to XNNPACK only when both operands are single matrices (batch 1)
 * and neither is transposed; every other product — a batch of matrices, as in attention's
 * Q·Kᵀ and P·V, or a transposed operand — runs a naive triple loop in C++ at about
 * 1 GMAC/s on this machine, against ≈ 14 GMAC/s for XNNPACK. On the ~10M-parameter training
 * benchmark that loop was a third of a step (docs/benchmarks.md, "Training").
 *
 * This kernel keeps tfjs's own kernel for what it already sends to XNNPACK, and for products
 * too small to gain from it (`preferXnnpack`), and turns the rest into XNNPACK products: a
 * transposed operand is transposed once by the backend's Transpose kernel; a batch of products
 * runs as one XNNPACK product per matrix on copies of its slices
 * (contiguous copies, cheap next to the product); an unbatched right operand shared by a batch
 * of left operands runs as a single product of the stacked left rows. XNNPACK's sums run in a
 * different order than the loop's, so results differ by float rounding (the forward-pass
 * tests against transformers' reference outputs hold; test/model/wasm-batch-matmul.test.ts
 * checks every case against the cpu backend).
 */
import * as tf from '@tensorflow/tfjs';
import { reshaped as view } from '../ops/js-kernel-io.js';
import { lastTwoSwappedPerm } from './wasm-transpose.js';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array;
  disposeData(dataId: unknown): void;
}

interface BatchMatMulArgs {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { transposeA: boolean; transposeB: boolean };
}

type Kernel = (args: BatchMatMulArgs) => tf.TensorInfo;

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/**
 * Whether XNNPACK beats tfjs-wasm's loop for `batch` products [M, K]·[K, N] (`sharedRight`: one
 * right matrix for all, computed as a single product; `rightTransposed`: the right operand is
 * stored [N, K]). Costs measured on the development VM: the loop ≈ 1 ns per multiply-add, ≈ 3 ns
 * when it walks an untransposed right matrix of more than 256 columns (a new cache line per
 * step); XNNPACK ≈ 0.07 ns per multiply-add, plus ≈ 4 ns per element to pack each new right
 * matrix and ≈ 15 µs per product for the operator and the slice copies. Small products with few
 * rows — attention while generating one token at a time, where the right matrix (the keys or
 * values so far) is large and the left has a row per query head — mostly stay with the loop.
 */
export function preferXnnpack(batch: number, M: number, K: number, N: number, sharedRight: boolean, rightTransposed: boolean): boolean {
  const macs = batch * M * K * N;
  const products = sharedRight ? 1 : batch;
  const loopNsPerMac = !rightTransposed && N > 256 ? 3 : 1;
  return loopNsPerMac * macs > products * (4 * K * N + 15_000) + 0.07 * macs;
}

/**
 * The kernel, given tfjs-wasm's own BatchMatMul (`tfjsKernel`: XNNPACK on single, untransposed
 * matrices, its loop otherwise) and Transpose.
 */
export function batchMatMulViaXnnpack(tfjsKernel: Kernel, transpose: (args: { inputs: { x: tf.TensorInfo }; backend: WasmBackendLike; attrs: { perm: number[] } }) => tf.TensorInfo): Kernel {
  return (args) => {
    const { a, b } = args.inputs;
    const { transposeA, transposeB } = args.attrs;
    const backend = args.backend;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return tfjsKernel(args);
    const ra = a.shape.length;
    const rb = b.shape.length;
    const batchShapeA = a.shape.slice(0, -2);
    const batchShapeB = b.shape.slice(0, -2);
    const batchA = size(batchShapeA);
    const batchB = size(batchShapeB);
    if (batchA === 1 && batchB === 1 && !transposeA && !transposeB) return tfjsKernel(args);
    // Batch shapes that broadcast other than "equal" or "one side single" keep tfjs's kernel.
    if (!(batchA === 1 || batchB === 1 || batchShapeA.join() === batchShapeB.join())) return tfjsKernel(args);
    const outBatchShape = tf.broadcast_util.assertAndGetBroadcastShape(batchShapeA, batchShapeB);
    const [M, K] = transposeA ? [a.shape[ra - 1]!, a.shape[ra - 2]!] : [a.shape[ra - 2]!, a.shape[ra - 1]!];
    const [Kb, N] = transposeB ? [b.shape[rb - 1]!, b.shape[rb - 2]!] : [b.shape[rb - 2]!, b.shape[rb - 1]!];
    // A mismatch is left to tfjs's kernel, to be reported in its own words.
    if (Kb !== K || !preferXnnpack(Math.max(batchA, batchB), M, K, N, batchB === 1, transposeB)) return tfjsKernel(args);
    const temporaries: tf.TensorInfo[] = [];
    const lastTwoSwapped = (t: tf.TensorInfo): tf.TensorInfo => {
      const out = transpose({ inputs: { x: t }, backend, attrs: { perm: lastTwoSwappedPerm(t.shape.length) } });
      temporaries.push(out);
      return out;
    };
    const A = transposeA ? lastTwoSwapped(a) : a;
    const B = transposeB ? lastTwoSwapped(b) : b;
    const untransposed = { transposeA: false, transposeB: false };
    const outShape = [...outBatchShape, M, N];
    /** Matrix `index` of t ([…, rows, cols]) copied into a tensor of its own. */
    const slice = (t: tf.TensorInfo, rows: number, cols: number, index: number) => {
      const s = backend.makeOutput([1, rows, cols], 'float32');
      const from = backend.typedArrayFromHeap(t) as Float32Array;
      (backend.typedArrayFromHeap(s) as Float32Array).set(from.subarray(index * rows * cols, (index + 1) * rows * cols));
      return s;
    };
    let out: tf.TensorInfo;
    if (batchB === 1) {
      // One right matrix for every left one: a single product of all left rows stacked.
      const stacked = tfjsKernel({ inputs: { a: view(A, [1, batchA * M, K]), b: view(B, [1, K, N]) }, backend, attrs: untransposed });
      out = view(stacked, outShape);
    } else {
      out = backend.makeOutput(outShape, 'float32');
      const batch = Math.max(batchA, batchB);
      for (let i = 0; i < batch; i++) {
        const ai = batchA === 1 ? view(A, [1, M, K]) : slice(A, M, K, i);
        const bi = slice(B, K, N, i);
        const product = tfjsKernel({ inputs: { a: ai, b: bi }, backend, attrs: untransposed });
        (backend.typedArrayFromHeap(out) as Float32Array).set(backend.typedArrayFromHeap(product) as Float32Array, i * M * N);
        backend.disposeData(product.dataId);
        backend.disposeData(bi.dataId);
        if (batchA !== 1) backend.disposeData(ai.dataId);
      }
    }
    for (const t of temporaries) backend.disposeData(t.dataId);
    return out;
  };
}
