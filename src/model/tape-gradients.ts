/**
 * tf.engine().gradients that frees what the tape kept when the forward or the backward pass
 * throws (a NaN check in an observer, an abort, a kernel error).
 *
 * tfjs keeps (engine.keep) a clone of every tensor a kernel or custom op saves for its gradient
 * and disposes them only at the very end of a gradients() call that completes at depth 0. When
 * f or a gradient function throws, those clones stay kept with nothing owning them (the next
 * gradients() just starts a new tape), and so does the value f returned when the throw is in the
 * backward pass: the whole step's saved activations were left on the heap per failed step.
 */
import * as tf from '@tensorflow/tfjs';

export interface TapeGradients<T extends tf.Tensor> {
  readonly value: T;
  /** One per x, in order; undefined where f does not depend on it (allowNoGradients). */
  readonly grads: (tf.Tensor | undefined)[];
}

/** Frees every tensor the engine's active tape saved for the backward pass, and drops the tape. */
function disposeActiveTape(engine: ReturnType<typeof tf.engine>): void {
  const tape = engine.state.activeTape as { saved?: tf.Tensor[] }[] | null;
  // Saved tensors may already be disposed (dispose is idempotent).
  for (const node of tape ?? []) for (const t of node.saved ?? []) t.dispose();
  engine.state.activeTape = null as unknown as typeof engine.state.activeTape;
}

/**
 * `tf.engine().gradients(f, xs, dy, allowNoGradients)`; when it throws, the tape's saved tensors
 * and the value f returned are disposed before the error goes on. f must return a tensor of its
 * own (as a loss is): on failure the caller never receives it, so it is freed here. Only a call
 * that starts the tape (gradient depth 0) cleans it up: a higher-order call's tape is its caller's.
 */
export function tapeGradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients = false): TapeGradients<T> {
  const engine = tf.engine();
  const ownsTape = engine.state.gradientDepth === 0;
  let value: T | undefined;
  try {
    return engine.gradients(
      () => (value = f()),
      xs,
      dy,
      allowNoGradients,
    ) as TapeGradients<T>;
  } catch (e) {
    if (ownsTape) {
      disposeActiveTape(engine);
      if (value && !(value instanceof tf.Variable) && !xs.includes(value)) value.dispose();
    }
    throw e;
  }
}
