/**
 * The differentiable Monarch product (APEX-METHOD §3) in TensorFlow.js, for the
 * operator-augmented forward that training uses (operator-hooks.ts). Same factors and the same
 * four steps as the plain-array product in monarch.ts; kept apart so that fusion and file
 * checks do not load TensorFlow.js.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * Differentiable Monarch product for a batch of row vectors: X is [rows, n] and the result is
 * [rows, n] with row i = M·X[i], i.e. Y = X·Mᵀ. Used on the output side with X = activations
 * (each token's selected features are one row) and on the input side with X = W[:, P] (each
 * weight row's selected columns), where W[:, P]·Mᵀ is exactly what §3 asks for.
 * B1, B2 are [nb, bs, bs] with block j = [out, in]. Block factors are transposed explicitly
 * before the batched matMul (transposed matMul is slow on the wasm backend).
 */
export function monarchApplyTf(B1: tf.Tensor3D, B2: tf.Tensor3D, x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const [nb, bs] = B1.shape;
    const rows = x.shape[0];
    const n = nb * bs;
    if (x.shape[1] !== n || B2.shape[0] !== nb || B2.shape[1] !== bs || B1.shape[2] !== bs || B2.shape[2] !== bs) {
      throw new RangeError(`monarchApplyTf: factors [${B1.shape}] / [${B2.shape}] do not fit x [${x.shape}]`);
    }
    // Step 1, batched over blocks: U[j, i, r] = Σ_c X[i, j·bs + c] · B1[j, r, c].
    const xBlocks = tf.transpose(tf.reshape(x, [rows, nb, bs]), [1, 0, 2]);
    const u = tf.matMul(xBlocks, tf.transpose(B1, [0, 2, 1]));
    // Step 2: u of row i is U[:, i, :] flattened (index j·bs + r = p·nb + q); v[q, i, p] = u_i[p·nb + q].
    const uRows = tf.reshape(tf.transpose(u, [1, 0, 2]), [rows, bs, nb]);
    const v = tf.transpose(uRows, [2, 0, 1]);
    // Step 3: W[q, i, r] = Σ_p V[q, i, p] · B2[q, r, p].
    const w = tf.matMul(v, tf.transpose(B2, [0, 2, 1]));
    // Step 4: y_i[r·nb + q] = W[q, i, r].
    return tf.reshape(tf.transpose(w, [1, 2, 0]), [rows, n]) as tf.Tensor2D;
  });
}
