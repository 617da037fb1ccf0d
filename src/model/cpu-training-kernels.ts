/**
 * A faster `UnsortedSegmentSum` for the tfjs `cpu` backend. tfjs's own launches one
 * equal/multiply/sum kernel chain per segment, so the gradient of a gather over thousands of
 * rows (embedding lookup, the APEX operator hooks' row moves) takes seconds there; this one is
 * a single pass over the input, with TF's semantics (ids outside [0, numSegments) are dropped).
 */
import * as tf from '@tensorflow/tfjs';
import { accumulateSegments } from './segment-sum.js';

interface CpuBackendLike {
  data: { get(dataId: unknown): { values: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array | Int32Array): tf.TensorInfo;
}

let registered = false;

/** Replaces the cpu backend's UnsortedSegmentSum once per process. */
export function registerCpuTrainingKernels(): void {
  if (registered) return;
  registered = true;
  // Unregister first: registering over an existing kernel only warns and keeps tfjs's copy
  // reachable under the same key, which would make the replacement order-dependent.
  if (tf.getKernel('UnsortedSegmentSum', 'cpu')) tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
  tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: 'cpu', kernelFunc: unsortedSegmentSumCpu as unknown as tf.KernelFunc });
}

/** out[s, ...] = Σ_{i: ids[i] = s} x[i, ...] over the leading axes that segmentIds covers. */
export function unsortedSegmentSumCpu(args: {
  inputs: { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  backend: CpuBackendLike;
  attrs: { numSegments: number };
}): tf.TensorInfo {
  const { x, segmentIds } = args.inputs;
  const { numSegments } = args.attrs;
  const backend = args.backend;
  const rows = segmentIds.shape.reduce((p, d) => p * d, 1);
  const innerShape = x.shape.slice(segmentIds.shape.length);
  const inner = innerShape.reduce((p, d) => p * d, 1);
  const xs = backend.data.get(x.dataId).values;
  const ids = backend.data.get(segmentIds.dataId).values;
  const o = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  accumulateSegments(xs, ids, rows, inner, numSegments, o);
  return backend.makeTensorInfo([numSegments, ...innerShape], x.dtype === 'int32' ? 'int32' : 'float32', o);
}
