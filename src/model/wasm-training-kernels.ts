/**
 * What the tfjs wasm backend lacks for training: an `UnsortedSegmentSum` kernel (the gradient
 * of `gather`, i.e. of the embedding lookup), a matMul gradient that transposes explicitly
 * instead of asking for transposeA/transposeB (which tfjs-wasm's own kernel runs in a naive loop
 * about ten times slower than XNNPACK) and sums over broadcast batch dimensions, and
 * an Identity that shares the buffer instead of copying it (the engine clones every tensor it
 * keeps for the backward pass). Also, for training and inference alike, a BatchMatMul that
 * sends batched and transposed products to XNNPACK too (wasm-batch-matmul.ts), and a Transpose
 * of the last two axes in SIMD tiles (wasm-transpose.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { accumulateSegments } from './segment-sum.js';
import { batchMatMulViaXnnpack } from './wasm-batch-matmul.js';
import { lastTwoSwappedPerm, transposeViaTiles } from './wasm-transpose.js';

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array;
  incRef(dataId: unknown): void;
}

let registered = false;

/** Registers both additions once; the gradient only changes what it does on wasm. */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  registered = true;
  if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) {
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: unsortedSegmentSumWasm as unknown as tf.KernelFunc });
  }
  // Unregister first: registering over an existing kernel only warns and keeps the original.
  const copyingIdentity = tf.getKernel('Identity', 'wasm');
  if (copyingIdentity) tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel({
    kernelName: 'Identity', backendName: 'wasm',
    kernelFunc: ((args: { inputs: { x: tf.TensorInfo }; backend: WasmBackendLike }) =>
      args.inputs.x.dtype === 'string' && copyingIdentity ? copyingIdentity.kernelFunc(args as never) : sharedIdentityWasm(args)) as unknown as tf.KernelFunc,
  });
  const tfjsTranspose = tf.getKernel('Transpose', 'wasm');
  if (tfjsTranspose) {
    tf.unregisterKernel('Transpose', 'wasm');
    tf.registerKernel({ ...tfjsTranspose, kernelFunc: transposeViaTiles(tfjsTranspose.kernelFunc as never) as unknown as tf.KernelFunc });
  }
  const tfjsBatchMatMul = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (tfjsBatchMatMul && transpose) {
    tf.unregisterKernel('BatchMatMul', 'wasm');
    tf.registerKernel({
      kernelName: 'BatchMatMul', backendName: 'wasm',
      ...(tfjsBatchMatMul.setupFunc ? { setupFunc: tfjsBatchMatMul.setupFunc } : {}),
      kernelFunc: batchMatMulViaXnnpack(tfjsBatchMatMul.kernelFunc as never, transpose.kernelFunc as never) as unknown as tf.KernelFunc,
    });
  }
  const original = tf.getGradient('BatchMatMul');
  if (!original) throw new Error('tfjs registered no BatchMatMul gradient');
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      if (tf.getBackend() !== 'wasm') return original.gradFunc(dy, saved, attrs);
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const g = dy as tf.Tensor;
      const t = swapLastTwo;
      // A batch-broadcast operand gets the sum of its gradients over the batches it served.
      const da = (f: () => tf.Tensor) => () => sumToShape(f(), a.shape);
      const db = (f: () => tf.Tensor) => () => sumToShape(f(), b.shape);
      if (!transposeA && !transposeB) return { a: da(() => tf.matMul(g, t(b))), b: db(() => tf.matMul(t(a), g)) };
      if (!transposeA && transposeB) return { a: da(() => tf.matMul(g, b)), b: db(() => tf.matMul(t(g), a)) };
      if (transposeA && !transposeB) return { a: da(() => tf.matMul(b, t(g))), b: db(() => tf.matMul(a, g)) };
      return { a: da(() => tf.matMul(t(b), t(g))), b: db(() => tf.matMul(t(g), t(a))) };
    },
  });
}

/**
 * Identity as a new reference to the same buffer, as the cpu backend does it. The engine clones
 * (Identity) every tensor it saves for the backward pass — each matMul's weight and
 * activation, every customGrad input — and tfjs's wasm Identity copies the bytes each time;
 * tensors are immutable (a variable's assign swaps its buffer, never writes into it), so a
 * shared, reference-counted buffer is equivalent and saves a full copy per saved tensor.
 */
function sharedIdentityWasm(args: { inputs: { x: tf.TensorInfo }; backend: WasmBackendLike }): tf.TensorInfo {
  const { x } = args.inputs;
  args.backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/** x summed over the leading axes `shape` lacks and the axes where `shape` has 1, reshaped to `shape`. */
function sumToShape(x: tf.Tensor, shape: readonly number[]): tf.Tensor {
  if (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i])) return x;
  const lead = x.shape.length - shape.length;
  const axes = x.shape.map((_, i) => i).filter((i) => i < lead || (shape[i - lead] === 1 && x.shape[i] !== 1));
  return tf.reshape(tf.sum(x, axes), [...shape]);
}

function swapLastTwo(x: tf.Tensor): tf.Tensor {
  return tf.transpose(x, lastTwoSwappedPerm(x.rank));
}

/** out[s, ...] = Σ_{i: ids[i] = s} x[i, ...]; ids outside [0, numSegments) are dropped, as in TF. */
function unsortedSegmentSumWasm(args: {
  inputs: { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { numSegments: number };
}): tf.TensorInfo {
  const { x, segmentIds } = args.inputs;
  const { numSegments } = args.attrs;
  const backend = args.backend;
  if (x.dtype !== 'float32') throw new Error(`UnsortedSegmentSum (wasm): float32 only, got ${x.dtype}`);
  const rows = segmentIds.shape.reduce((p, d) => p * d, 1);
  const inner = x.shape.slice(segmentIds.shape.length).reduce((p, d) => p * d, 1);
  const out = backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], 'float32');
  const xs = backend.typedArrayFromHeap(x) as Float32Array;
  const ids = backend.typedArrayFromHeap(segmentIds);
  const o = backend.typedArrayFromHeap(out) as Float32Array;
  o.fill(0);
  accumulateSegments(xs, ids, rows, inner, numSegments, o);
  return out;
}
