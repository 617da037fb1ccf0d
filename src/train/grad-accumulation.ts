/**
 * Gradient accumulation over micro-batches: sums the gradients of each micro-batch, then
 * hands back the sum times a scale (1 / micro-batches for a mean of per-batch means, or
 * 1 / target tokens when the per-batch losses were token sums).
 */
import * as tf from '@tensorflow/tfjs';

export class GradientAccumulator {
  private sums = new Map<string, tf.Tensor>();
  private added = 0;

  /** Micro-batches added since the last `take`. */
  get count(): number {
    return this.added;
  }

  /** Adds one micro-batch's gradients (not disposed; every batch must name the same tensors). */
  add(grads: ReadonlyMap<string, tf.Tensor>): void {
    if (this.added > 0 && (grads.size !== this.sums.size || [...grads.keys()].some((k) => !this.sums.has(k)))) {
      throw new Error('GradientAccumulator: micro-batches must provide gradients for the same parameters');
    }
    for (const [name, g] of grads) {
      const previous = this.sums.get(name);
      this.sums.set(name, previous === undefined ? tf.clone(g) : tf.tidy(() => tf.add(previous, g)));
      previous?.dispose();
    }
    this.added += 1;
  }

  /** The accumulated sums times `scale` (default 1 / count); resets the accumulator. */
  take(scale = 1 / this.added): Map<string, tf.Tensor> {
    if (this.added === 0) throw new Error('GradientAccumulator: nothing accumulated');
    const out = new Map<string, tf.Tensor>();
    for (const [name, sum] of this.sums) {
      out.set(name, scale === 1 ? sum : tf.tidy(() => tf.mul(sum, scale)));
      if (scale !== 1) sum.dispose();
    }
    this.sums = new Map();
    this.added = 0;
    return out;
  }

  /** Frees anything accumulated and not taken. */
  dispose(): void {
    for (const sum of this.sums.values()) sum.dispose();
    this.sums = new Map();
    this.added = 0;
  }
}
