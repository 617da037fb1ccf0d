/**
 * Log-softmax over a vocabulary seen in blocks: per position, a running maximum and a running
 * Σ exp(logit − maximum) in float64, rescaled whenever a block raises the maximum, so
 * log p(target) = target logit − (max + log sum) without the full logits row ever existing.
 */
export class StreamingLogSoftmax {
  private readonly max: Float64Array;
  private readonly sum: Float64Array;
  private readonly target: Float64Array;

  constructor(readonly positions: number) {
    this.max = new Float64Array(positions).fill(-Infinity);
    this.sum = new Float64Array(positions);
    this.target = new Float64Array(positions).fill(NaN);
  }

  /** One vocab block: per position its maximum logit and Σ exp(logit − that maximum). */
  addBlock(blockMax: ArrayLike<number>, blockSumExp: ArrayLike<number>): void {
    for (let p = 0; p < this.positions; p++) {
      const m = Math.max(this.max[p]!, blockMax[p]!);
      this.sum[p] = this.sum[p]! * Math.exp(this.max[p]! - m) + blockSumExp[p]! * Math.exp(blockMax[p]! - m);
      this.max[p] = m;
    }
  }

  setTargetLogit(position: number, logit: number): void {
    this.target[position] = logit;
  }

  /** log p(target) at a position, once every block has been added. */
  targetLogprob(position: number): number {
    return this.target[position]! - (this.max[position]! + Math.log(this.sum[position]!));
  }
}
