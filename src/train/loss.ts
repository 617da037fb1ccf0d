/**
 * Causal language-model loss: cross-entropy of next-token prediction. The logits at position
 * t predict token t+1; a token contributes when the loss mask is 1 at its own position (the
 * data marks targets: assistant tokens for chat, every real token for packed text). Position 0
 * is never a target (nothing predicts it) and the last position's logits predict nothing.
 *
 * Log-softmax is computed stably (max-shifted log-sum-exp); the gradient is the closed form
 * (softmax − one-hot) · weight, which keeps one [tokens, vocab] temporary instead of the
 * chain of an autodiffed log-softmax.
 */
import * as tf from '@tensorflow/tfjs';

export type LossReduction = 'mean' | 'sum';

/**
 * Cross-entropy of `logits` [B, T, V] against the next tokens of `inputIds` [B, T] (int32),
 * weighted by `lossMask` [B, T] (1 where the token is a target). `mean` divides by the number
 * of targets (0 targets give 0), `sum` returns the summed negative log-likelihood (for
 * token-weighted accumulation over micro-batches). Differentiable in `logits`.
 */
export function causalLmLoss(
  logits: tf.Tensor3D,
  inputIds: tf.Tensor2D,
  lossMask: tf.Tensor2D,
  reduction: LossReduction = 'mean',
): tf.Scalar {
  const [batch, time, vocab] = logits.shape;
  if (inputIds.shape[0] !== batch || inputIds.shape[1] !== time || lossMask.shape[0] !== batch || lossMask.shape[1] !== time) {
    throw new Error(
      `causalLmLoss: logits [${logits.shape}] do not match input ids [${inputIds.shape}] / loss mask [${lossMask.shape}]`,
    );
  }
  return tf.tidy(() => {
    const { targets, weights, denominator } = shiftedTargets(inputIds, lossMask, reduction);
    return weightedNll(logits, targets, weights, denominator, batch * time, vocab);
  });
}

/**
 * The same loss from the final hidden states [B, T, D] through `head` (lm_head: [rows, D] →
 * [rows, V]), with the logits made for at most `chunkRows` of the B·T positions at a time. For
 * backends whose buffers are bounded (webgpu's largest storage binding, a few hundred MB to a
 * few GB: [tokens, V] logits of a 128K vocabulary pass it at a few thousand tokens); the total
 * memory is unchanged (each chunk's logits are kept for its backward pass), only no single
 * tensor exceeds the bound. Equal to causalLmLoss(head(hidden)) up to float rounding (the sum
 * over positions is grouped by chunk).
 */
export function causalLmLossChunked(
  hidden: tf.Tensor3D,
  head: (rows: tf.Tensor2D) => tf.Tensor2D,
  inputIds: tf.Tensor2D,
  lossMask: tf.Tensor2D,
  reduction: LossReduction,
  chunkRows: number,
): tf.Scalar {
  const [batch, time, width] = hidden.shape;
  if (!(chunkRows >= 1)) throw new RangeError(`causalLmLossChunked: chunkRows must be at least 1, got ${chunkRows}`);
  return tf.tidy(() => {
    const rows = batch * time;
    const { targets, weights, denominator } = shiftedTargets(inputIds, lossMask, reduction);
    const sizes = Array.from({ length: Math.ceil(rows / chunkRows) }, (_, i) => Math.min(chunkRows, rows - i * chunkRows));
    const hs = tf.split(tf.reshape(hidden, [rows, width]), sizes, 0) as tf.Tensor2D[];
    const ts = tf.split(targets, sizes, 0) as tf.Tensor1D[];
    const ws = tf.split(weights, sizes, 0) as tf.Tensor2D[];
    let total: tf.Scalar | undefined;
    sizes.forEach((n, c) => {
      const logits = head(hs[c]!);
      const part = weightedNll(logits, ts[c]!, ws[c]!, denominator, n, logits.shape[1]);
      total = total ? (tf.add(total, part) as tf.Scalar) : part;
    });
    return total!;
  });
}

/** Next-token targets [rows] and loss weights [rows, 1] (position t scored against token t+1), and the divisor of the reduction. */
function shiftedTargets(inputIds: tf.Tensor2D, lossMask: tf.Tensor2D, reduction: LossReduction): { targets: tf.Tensor1D; weights: tf.Tensor2D; denominator: tf.Scalar } {
  const [batch, time] = inputIds.shape;
  const rows = batch * time;
  const nextIds = tf.concat([tf.slice(tf.cast(inputIds, 'float32'), [0, 1], [batch, time - 1]), tf.zeros([batch, 1])], 1);
  const nextMask = tf.concat([tf.slice(tf.cast(lossMask, 'float32'), [0, 1], [batch, time - 1]), tf.zeros([batch, 1])], 1);
  const weights = tf.reshape(nextMask, [rows, 1]) as tf.Tensor2D;
  const denominator = (reduction === 'mean' ? tf.maximum(tf.sum(weights), 1) : tf.ones([])) as tf.Scalar;
  return { targets: tf.reshape(nextIds, [rows]) as tf.Tensor1D, weights, denominator };
}

/**
 * Σ w·nll / denominator over `rows` positions of `logits` (any shape of rows × vocab elements),
 * differentiable in the logits with the closed-form gradient (softmax − one-hot) · w / denominator.
 */
function weightedNll(logits: tf.Tensor, targets: tf.Tensor1D, weights: tf.Tensor2D, denominator: tf.Scalar, rows: number, vocab: number): tf.Scalar {
  const shape = logits.shape;
  // Everything the gradient needs goes through inputs and `save`: tensors captured by the
  // closure would be freed when the forward scope ends, before backpropagation.
  const lossOf = tf.customGrad((x, targetIds, w, denom, save) => {
    const flat = tf.reshape(x as tf.Tensor, [rows, vocab]);
    const oneHot = tf.oneHot(tf.cast(tf.reshape(targetIds as tf.Tensor, [rows]), 'int32') as tf.Tensor1D, vocab);
    const targetLogit = tf.sum(tf.mul(flat, oneHot), 1, true);
    const nll = tf.sub(tf.logSumExp(flat, 1, true), targetLogit);
    (save as tf.GradSaveFunc)([flat, oneHot, w as tf.Tensor, denom as tf.Tensor]);
    return {
      value: tf.div(tf.sum(tf.mul(nll, w as tf.Tensor)), denom as tf.Tensor),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedFlat, savedOneHot, savedW, savedDenom] = saved as [tf.Tensor2D, tf.Tensor, tf.Tensor, tf.Tensor];
        const scale = tf.div(tf.mul(savedW, dy), savedDenom);
        const grad = tf.mul(tf.sub(tf.softmax(savedFlat), savedOneHot), scale);
        return [tf.reshape(grad, shape), tf.zerosLike(targetIds as tf.Tensor), tf.zerosLike(savedW), tf.zerosLike(savedDenom)];
      },
    };
  });
  return lossOf(logits, targets, weights, denominator) as tf.Scalar;
}
