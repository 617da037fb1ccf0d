/**
 * Differentiable moves of whole rows or columns ("lines") of a 2-D tensor, the two primitives
 * the operator-augmented forward is built from (operator-hooks.ts):
 *
 *   take(x, lines)          → the listed rows [k, C] (axis 0) or columns [R, k] (axis 1)
 *   put(x, lines, updates)  → x with those rows / columns replaced by `updates`
 *
 * with gradients take ↔ put (the lines are distinct, so a put into zeros is the scatter-add
 * that take's gradient needs). On the JavaScript-side backends (`cpu`, `wasm`) both are one
 * kernel of ours: a copy plus a loop over k lines, where tfjs's own route (GatherV2 along a
 * feature axis, or concat + a segment sum to rebuild the full tensor) costs several passes
 * over the whole tensor per call and direction. Other backends (webgpu, tensorflow) run the
 * same semantics with tfjs ops: gather for take, gather over concat([x, updates]) for put (or,
 * where that concatenation would not fit one webgpu storage binding, the updates spread to x's
 * shape by a gather and chosen line by line with a where).
 */
import * as tf from '@tensorflow/tfjs';
import { jsKernelRegistration, onJsBackend, type KernelIo } from './js-kernel-io.js';
import { maxStorageBindingBytes } from './webgpu-programs.js';

export type LineAxis = 0 | 1;

/** A fixed list of distinct lines along one axis of tensors whose extent on that axis is `extent`. */
export interface LineSet {
  readonly axis: LineAxis;
  readonly extent: number;
  readonly lines: Int32Array;
  /** `lines` as an int32 tensor (kept; freed by dispose), for kernels that take the lines. */
  readonly indices: tf.Tensor1D;
  /**
   * int32 [extent] (kept): line c of `put(x, updates)` is line `sources[c]` of
   * concat([x, updates]) along the axis, i.e. c itself, or extent + i where c = lines[i].
   */
  readonly sources: tf.Tensor1D;
  readonly take: (x: tf.Tensor2D) => tf.Tensor2D;
  readonly put: (x: tf.Tensor2D, updates: tf.Tensor2D) => tf.Tensor2D;
  /** Frees the index tensors (kept outside any tidy scope). */
  readonly dispose: () => void;
}

const TAKE = 'ApexTakeLines';
const PUT = 'ApexPutLines';

/** Copies lines of `src` ([R, C] row-major) into lines of `dst`: line from[i] → to[i] (i itself where null). */
export function copyLines(
  src: Float32Array, srcCols: number, dst: Float32Array, dstCols: number, rows: number,
  axis: LineAxis, from: ArrayLike<number> | null, to: ArrayLike<number> | null, count: number,
): void {
  if (axis === 0) {
    for (let i = 0; i < count; i++) {
      const s = (from ? from[i]! : i) * srcCols;
      dst.set(src.subarray(s, s + srcCols), (to ? to[i]! : i) * dstCols);
    }
    return;
  }
  // Columns: one loop per case, so that the inner loop carries no per-element branch (this is
  // the costly direction, a strided gather or scatter per row).
  if (from && to) {
    for (let r = 0; r < rows; r++) {
      const so = r * srcCols;
      const d = r * dstCols;
      for (let i = 0; i < count; i++) dst[d + to[i]!] = src[so + from[i]!]!;
    }
  } else if (from) {
    for (let r = 0; r < rows; r++) {
      const so = r * srcCols;
      const d = r * dstCols;
      for (let i = 0; i < count; i++) dst[d + i] = src[so + from[i]!]!;
    }
  } else if (to) {
    for (let r = 0; r < rows; r++) {
      const so = r * srcCols;
      const d = r * dstCols;
      for (let i = 0; i < count; i++) dst[d + to[i]!] = src[so + i]!;
    }
  } else {
    for (let r = 0; r < rows; r++) dst.set(src.subarray(r * srcCols, r * srcCols + count), r * dstCols);
  }
}

function takeKernel(io: KernelIo, x: tf.TensorInfo, lines: tf.TensorInfo, axis: LineAxis): tf.TensorInfo {
  const [R, C] = x.shape as [number, number];
  const k = lines.shape[0]!;
  return io.outputs([axis === 0 ? [k, C] : [R, k]], [x, lines], ([out], [xs, idx]) => copyLines(xs as Float32Array, C, out!, axis === 0 ? C : k, R, axis, idx!, null, k))[0]!;
}

function putKernel(io: KernelIo, x: tf.TensorInfo, lines: tf.TensorInfo, updates: tf.TensorInfo, axis: LineAxis): tf.TensorInfo {
  const [R, C] = x.shape as [number, number];
  const k = lines.shape[0]!;
  return io.outputs([[R, C]], [x, lines, updates], ([out], [xs, idx, us]) => {
    out!.set(xs as Float32Array);
    copyLines(us as Float32Array, axis === 0 ? C : k, out!, C, R, axis, null, idx!, k);
  })[0]!;
}

const registerLineKernels = jsKernelRegistration({
  [TAKE]: (io, inputs, attrs: { axis: LineAxis }) => takeKernel(io, inputs.x!, inputs.lines!, attrs.axis),
  [PUT]: (io, inputs, attrs: { axis: LineAxis }) => putKernel(io, inputs.x!, inputs.lines!, inputs.updates!, attrs.axis),
});

function checkLines(lines: Int32Array, extent: number): void {
  const seen = new Uint8Array(extent);
  for (const l of lines) {
    if (!Number.isInteger(l) || l < 0 || l >= extent) throw new RangeError(`line index ${l} outside [0, ${extent})`);
    if (seen[l]) throw new RangeError(`line index ${l} listed twice: moved lines must be distinct`);
    seen[l] = 1;
  }
}

/**
 * Lines `lines` along `axis` of tensors with `extent` lines on that axis. `portable: true`
 * forces the tfjs-ops route that non-JavaScript backends take, and `spread: true` with it that
 * route's put without the concatenation (where the concatenation would not fit a webgpu
 * binding), to check them on any backend.
 */
export function lineSet(lines: Int32Array, axis: LineAxis, extent: number, options: { portable?: boolean; spread?: boolean } = {}): LineSet {
  checkLines(lines, extent);
  registerLineKernels();
  const k = lines.length;
  const idx = tf.keep(tf.tensor1d(lines, 'int32')) as tf.Tensor1D;
  // For put on the other backends: line c of the result comes from concat([x, updates]) line
  // from[c] (c itself, or extent + i when c = lines[i]).
  const fromArr = Int32Array.from({ length: extent }, (_, c) => c);
  lines.forEach((c, i) => {
    fromArr[c] = extent + i;
  });
  const from = tf.keep(tf.tensor1d(fromArr, 'int32')) as tf.Tensor1D;

  const takeRaw = (x: tf.Tensor2D): tf.Tensor2D =>
    tf.engine().runKernel(TAKE, { x, lines: idx }, { axis } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  const putRaw = (x: tf.Tensor2D, updates: tf.Tensor2D): tf.Tensor2D =>
    tf.engine().runKernel(PUT, { x, lines: idx, updates }, { axis } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  const updatesShape = (x: tf.Tensor2D): [number, number] => (axis === 0 ? [k, x.shape[1]] : [x.shape[0], k]);

  const takeJs = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = inputs[0] as tf.Tensor2D;
    return { value: takeRaw(x), gradFunc: (dy: tf.Tensor) => putRaw(tf.zeros(x.shape) as tf.Tensor2D, dy as tf.Tensor2D) };
  }) as (x: tf.Tensor2D) => tf.Tensor2D;
  const putJs = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = inputs[0] as tf.Tensor2D;
    const updates = inputs[1] as tf.Tensor2D;
    return {
      value: putRaw(x, updates),
      gradFunc: (dy: tf.Tensor) => [putRaw(dy as tf.Tensor2D, tf.zeros(updatesShape(x)) as tf.Tensor2D), takeRaw(dy as tf.Tensor2D)],
    };
  }) as (x: tf.Tensor2D, updates: tf.Tensor2D) => tf.Tensor2D;

  // put without the concatenation: concat([x, updates]) is one tensor larger than x, and on
  // webgpu a tensor a shader reads or writes must fit one storage binding
  // (maxStorageBufferBindingSize); past it the concat and the gather are dropped by the device and
  // the result reads as zeros (or a recycled buffer's bytes). Here no tensor is larger than x:
  // the updates spread to x's shape (line c from updates' line i where c = lines[i]), then a
  // where picks them on the listed lines. The same bits (both only copy).
  let spread: { position: tf.Tensor1D; listed: tf.Tensor } | undefined;
  const putSpread = (x: tf.Tensor2D, updates: tf.Tensor2D): tf.Tensor2D => {
    if (spread === undefined) {
      const positionArr = new Int32Array(extent);
      const listedArr = new Uint8Array(extent);
      lines.forEach((c, i) => {
        positionArr[c] = i;
        listedArr[c] = 1;
      });
      spread = {
        position: tf.keep(tf.tensor1d(positionArr, 'int32')) as tf.Tensor1D,
        listed: tf.keep(tf.tensor(listedArr, axis === 0 ? [extent, 1] : [1, extent], 'bool')),
      };
    }
    const { position, listed } = spread;
    return tf.tidy(() => tf.where(listed, tf.gather(updates, position, axis), x) as tf.Tensor2D);
  };
  const concatFits = (x: tf.Tensor2D, updates: tf.Tensor2D) => 4 * (x.size + updates.size) <= maxStorageBindingBytes();

  const usesJsKernels = () => !options.portable && onJsBackend();
  const check = (x: tf.Tensor2D) => {
    if (x.rank !== 2 || x.shape[axis] !== extent) throw new RangeError(`line move expects ${extent} lines along axis ${axis}, got [${x.shape}]`);
  };
  return {
    axis, extent, lines, indices: idx, sources: from,
    take: (x) => {
      check(x);
      return usesJsKernels() ? takeJs(x) : (tf.gather(x, idx, axis) as tf.Tensor2D);
    },
    put: (x, updates) => {
      check(x);
      // The tidy frees the concatenation where a caller runs outside a scope (AdamW's step).
      if (usesJsKernels()) return putJs(x, updates);
      if (k > 0 && (options.spread === true || !concatFits(x, updates))) return putSpread(x, updates);
      return tf.tidy(() => tf.gather(tf.concat([x, updates], axis), from, axis) as tf.Tensor2D);
    },
    dispose: () => {
      idx.dispose();
      from.dispose();
      if (spread !== undefined) tf.dispose([spread.position, spread.listed]);
    },
  };
}
