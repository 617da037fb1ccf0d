/**
 * Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`: the L2 norm over all
 * gradients together; every gradient is multiplied by min(1, maxNorm / (norm + 1e-6)). Returns
 * the norm before clipping (logged as `grad_norm`).
 *
 * The coefficient is computed on the backend from the norm tensor, not from a value read back:
 * the update then never waits on (or depends on) a device-to-host read, which on webgpu is an
 * asynchronous round trip per step. The norm is still read, for the log and the NaN guard.
 */
import * as tf from '@tensorflow/tfjs';
import { readScalar } from '../model/tensor-read.js';
import { onJsBackend } from '../ops/js-kernel-io.js';
import { onWebgpu } from '../ops/webgpu-programs.js';
import { sumOfSquaresWebgpu } from './sum-squares-webgpu.js';
import { FUSED_MAX_ELEMENTS, sumOfSquares } from './train-kernels.js';

export interface ClippedGradients {
  /** New tensors (the caller disposes both these and the inputs). */
  readonly grads: Map<string, tf.Tensor>;
  /** Global L2 norm before clipping; NaN or Infinity when a gradient is not finite. */
  readonly norm: number;
}

/**
 * The global L2 norm of all gradients as a scalar tensor, accumulated in float32 (the small
 * gradients' part in float64 on cpu and wasm). A chain of
 * two-input adds, not tf.addN: the webgpu backend's AddN binds every input to one shader, and
 * WebGPU limits the storage buffers of a shader stage (8 by default); past that the kernel
 * cannot run (webgpu-guards.ts now splits such an AddN, but the chain needs no guard). On cpu
 * and wasm the small gradients' squares are summed by one kernel of ours (train-kernels.ts), on
 * webgpu all of them by a few launches of ours (sum-squares-webgpu.ts).
 */
function globalNormTensor(grads: ReadonlyMap<string, tf.Tensor>): tf.Scalar {
  if (onWebgpu()) return tf.tidy(() => tf.sqrt(sumOfSquaresWebgpu([...grads.values()])));
  const small = new Set(onJsBackend() ? [...grads.values()].filter((g) => g.size <= FUSED_MAX_ELEMENTS) : []);
  return tf.tidy(() => {
    let total: tf.Tensor = small.size > 0 ? sumOfSquares([...small]) : tf.scalar(0);
    for (const g of grads.values()) if (!small.has(g)) total = tf.add(total, tf.sum(tf.square(g)));
    return tf.sqrt(total) as tf.Scalar;
  });
}

export async function globalNorm(grads: ReadonlyMap<string, tf.Tensor>): Promise<number> {
  if (grads.size === 0) return 0;
  const norm = globalNormTensor(grads);
  try {
    return await readScalar(norm);
  } finally {
    norm.dispose();
  }
}

export interface ClipCoefficient {
  /** min(1, maxNorm / (norm + 1e-6)), or 1 when the norm is not finite (caller disposes). */
  readonly coefficient: tf.Scalar;
  /** Global L2 norm before clipping; NaN or Infinity when a gradient is not finite. */
  readonly norm: number;
}

/**
 * The factor that scales the gradients to a global norm of at most `maxNorm`, as a scalar
 * tensor, and the norm. The trainer hands the factor to AdamW, which applies it where it reads
 * the gradients (one launch less per parameter on webgpu; the same tf.mul elsewhere).
 */
export async function clipCoefficient(grads: ReadonlyMap<string, tf.Tensor>, maxNorm: number): Promise<ClipCoefficient> {
  if (!(maxNorm > 0)) throw new Error(`clipByGlobalNorm: maxNorm must be > 0, got ${maxNorm}`);
  const normT = grads.size === 0 ? tf.scalar(0) : globalNormTensor(grads);
  try {
    const coefficient = tf.tidy(() => {
      const c = tf.minimum(tf.div(tf.scalar(maxNorm), tf.add(normT, 1e-6)), 1);
      return tf.where(tf.isFinite(normT), c, tf.onesLike(c)) as tf.Scalar;
    });
    try {
      return { coefficient, norm: await readScalar(normT) };
    } catch (e) {
      coefficient.dispose();
      throw e;
    }
  } finally {
    normT.dispose();
  }
}

/**
 * Scales the gradients so that their global norm is at most `maxNorm` (no clipping when
 * `maxNorm` is Infinity). A non-finite norm leaves the gradients unscaled: the caller decides
 * whether to skip the step.
 */
export async function clipByGlobalNorm(grads: ReadonlyMap<string, tf.Tensor>, maxNorm: number): Promise<ClippedGradients> {
  const { coefficient, norm } = await clipCoefficient(grads, maxNorm);
  const out = new Map<string, tf.Tensor>();
  for (const [name, g] of grads) out.set(name, tf.mul(g, coefficient));
  coefficient.dispose();
  return { grads: out, norm };
}
