/**
 * The small tensor functions a LLaMA decoder layer is built from: RMSNorm as transformers
 * computes it, SiLU, and the linear map y = x·Wᵀ + b with W in checkpoint layout [out, in].
 * All differentiable.
 */
import * as tf from '@tensorflow/tfjs';
import { onWebgpu } from '../ops/webgpu-programs.js';
import { rmsNormWebgpu, siluMulWebgpu } from './webgpu-layer-kernels.js';

/**
 * weight · x / sqrt(mean(x²) + eps) over the last axis (float32 variance, as transformers). On
 * webgpu the same as two programs of apex's own (webgpu-layer-kernels.ts: launches, not
 * arithmetic, are what a step costs there).
 */
export function rmsNorm<T extends tf.Tensor>(x: T, weight: tf.Tensor1D, eps: number): T {
  if (onWebgpu()) return rmsNormWebgpu(x, weight, eps);
  const variance = tf.mean(tf.square(x), -1, true);
  return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(variance, eps)))) as T;
}

export function silu<T extends tf.Tensor>(x: T): T {
  return tf.mul(x, tf.sigmoid(x)) as T;
}

/**
 * silu(gate) ⊙ up, the input of down_proj; `observe` (when given) receives silu(gate) itself. On
 * webgpu the product is one program of apex's own (webgpu-layer-kernels.ts) and silu(gate) is
 * made only for `observe`; elsewhere it is made once and shared.
 */
export function gatedUp<T extends tf.Tensor>(gate: T, up: T, observe?: (activation: T) => void): T {
  if (onWebgpu()) {
    if (observe) observe(silu(gate));
    return siluMulWebgpu(gate, up);
  }
  const activation = silu(gate);
  observe?.(activation);
  return tf.mul(activation, up) as T;
}

/**
 * x [..., in] · Wᵀ (+ b) with W [out, in]. Computed as (W · xᵀ)ᵀ: tfjs-wasm's own matMul runs a
 * transposed operand in a naive loop about ten times slower than XNNPACK (apex's wasm
 * BatchMatMul, wasm-batch-matmul.ts, now transposes such operands itself), and this form keeps
 * the big weight untransposed. On webgpu, where every transpose is a kernel launch of its own
 * (and another for its gradient) and launches are what a step costs, the matMul reads W
 * transposed instead: 1 launch forward and 2 backward instead of 3 and 4.
 */
export function linear(x: tf.Tensor, weight: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor {
  const inDim = x.shape[x.shape.length - 1]!;
  const lead = x.shape.slice(0, -1);
  const rows = tf.reshape(x, [-1, inDim]);
  let y: tf.Tensor = onWebgpu() ? tf.matMul(rows, weight, false, true) : tf.transpose(tf.matMul(weight, tf.transpose(rows)));
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...lead, weight.shape[0]]);
}
