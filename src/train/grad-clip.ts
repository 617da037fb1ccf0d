/**
 * Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`: the L2 norm over all
 * gradients together; when it exceeds `maxNorm` every gradient is scaled by
 * maxNorm / (norm + 1e-6). Returns the norm before clipping (logged as `grad_norm`).
 */
import * as tf from '@tensorflow/tfjs';

export interface ClippedGradients {
  /** New tensors (the caller disposes both these and the inputs). */
  readonly grads: Map<string, tf.Tensor>;
  /** Global L2 norm before clipping; NaN or Infinity when a gradient is not finite. */
  readonly norm: number;
}

/** Global L2 norm of all gradients, accumulated in float32 on the backend. */
export function globalNorm(grads: ReadonlyMap<string, tf.Tensor>): number {
  if (grads.size === 0) return 0;
  return tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))).dataSync()[0] as number);
}

/**
 * Scales the gradients so that their global norm is at most `maxNorm` (no clipping when
 * `maxNorm` is Infinity). A non-finite norm leaves the gradients unscaled: the caller decides
 * whether to skip the step.
 */
export function clipByGlobalNorm(grads: ReadonlyMap<string, tf.Tensor>, maxNorm: number): ClippedGradients {
  if (!(maxNorm > 0)) throw new Error(`clipByGlobalNorm: maxNorm must be > 0, got ${maxNorm}`);
  const norm = globalNorm(grads);
  const coefficient = maxNorm / (norm + 1e-6);
  const scale = Number.isFinite(norm) && coefficient < 1;
  const out = new Map<string, tf.Tensor>();
  for (const [name, g] of grads) out.set(name, scale ? tf.tidy(() => tf.mul(g, coefficient)) : tf.clone(g));
  return { grads: out, norm };
}
