/**
 * The contract between the forward pass and everything that rides on it: analysis observers,
 * the APEX operator-augmented forward (training), and LoRA. The forward pass calls these hooks
 * per decoder layer; it never knows what an operator is.
 *
 * All tensors passed to hooks are alive only for the duration of the call unless the hook
 * `tf.keep`s what it returns; hooks run inside the caller's tf.tidy / gradient tape, so the
 * transforms below are differentiable.
 */
import type * as tf from '@tensorflow/tfjs';

/** The seven projections of a LLaMA-family decoder layer, as named in HF checkpoints. */
export type ProjectionKey = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

export interface LayerHooks {
  /**
   * Replaces a projection's weight [out, in] before use (input-side APEX mixing of o_proj /
   * down_proj columns, LoRA's W + s·B·A). Called once per layer evaluation.
   */
  transformWeight?(key: ProjectionKey, weight: tf.Tensor2D): tf.Tensor2D;
  /**
   * Replaces a projection's bias [out] before use (the output-side APEX rule on v/gate/up
   * biases). Called after transformWeight of the same projection, once per layer evaluation.
   */
  transformBias?(key: ProjectionKey, bias: tf.Tensor1D): tf.Tensor1D;
}

/** What an observer sees: per layer, the two activations APEX measures (§2). */
export interface LayerActivations {
  readonly layer: number;
  /** Attention output before o_proj, [B, T, H·dh], concatenated heads (from the transformed v_proj). */
  readonly attention: tf.Tensor3D;
  /** silu(x·W_gateᵀ) with the transformed gate_proj weight and bias, [B, T, I]. */
  readonly gate: tf.Tensor3D;
}

/**
 * Observers run inside the forward's tidy scope. They must not retain the tensors they are
 * given; they compute what they need (e.g. per-sequence sums of squares) and `tf.keep` or
 * download it.
 */
export type LayerObserver = (activations: LayerActivations) => void;
