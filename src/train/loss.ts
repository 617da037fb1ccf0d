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
  const rows = batch * time;
  return tf.tidy(() => {
    // Targets and weights shifted left by one: position t is scored against token t+1.
    const nextIds = tf.concat([tf.slice(tf.cast(inputIds, 'float32'), [0, 1], [batch, time - 1]), tf.zeros([batch, 1])], 1);
    const nextMask = tf.concat([tf.slice(tf.cast(lossMask, 'float32'), [0, 1], [batch, time - 1]), tf.zeros([batch, 1])], 1);
    const weights = tf.reshape(nextMask, [rows, 1]);
    const denominator = reduction === 'mean' ? tf.maximum(tf.sum(weights), 1) : tf.ones([]);
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
          return [tf.reshape(grad, [batch, time, vocab]), tf.zerosLike(targetIds as tf.Tensor), tf.zerosLike(savedW), tf.zerosLike(savedDenom)];
        },
      };
    });
    return lossOf(logits, tf.reshape(nextIds, [rows]), weights, denominator) as tf.Scalar;
  });
}
