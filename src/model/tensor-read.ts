/**
 * Reads tensor values back to JavaScript asynchronously. The webgpu backend under Node cannot
 * read synchronously (its readSync goes through OffscreenCanvas, which Node lacks), so every
 * read of a tensor that may live on the GPU goes through these helpers instead of
 * the synchronous reads. On cpu and wasm the values are the same bits as a synchronous read.
 * On webgpu a read also fails once the GPU has rejected a command (webgpu-guards.ts): what it
 * would return may be stale.
 */
import * as tf from '@tensorflow/tfjs';
import { assertNoGpuError } from './webgpu-guards.js';

/**
 * The values of `t` as a Float32Array the caller owns (a copy: never a view of backend memory,
 * so it stays valid after `t` is disposed). Non-float32 tensors are converted element-wise.
 */
export async function readFloat32(t: tf.Tensor): Promise<Float32Array> {
  const data = await t.data();
  assertNoGpuError();
  return data instanceof Float32Array ? data.slice() : Float32Array.from(data as ArrayLike<number>);
}

/** The single value of a scalar (or one-element) tensor. */
export async function readScalar(t: tf.Tensor): Promise<number> {
  const data = await t.data();
  assertNoGpuError();
  if (data.length !== 1) throw new RangeError(`readScalar: expected one element, got ${data.length}`);
  return Number(data[0]);
}

/** Whether `t` holds a NaN or ±Inf, computed where it lives (one boolean read, not its values). */
export async function hasNonFinite(t: tf.Tensor): Promise<boolean> {
  const bad = tf.tidy(() => tf.logicalNot(tf.all(tf.isFinite(t))));
  try {
    return (await readScalar(bad)) !== 0;
  } finally {
    bad.dispose();
  }
}
