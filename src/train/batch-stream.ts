/**
 * The order in which training reads its sequences: epoch after epoch, each a seeded shuffle of
 * all sequences, consumed as one continuous stream of micro-batches (a micro-batch that reaches
 * the end of an epoch continues into the next, so every micro-batch is full and has one shape).
 *
 * Each epoch's shuffle seed is drawn from the trainer's Rng when the epoch starts; the position
 * (epoch, index, that seed) plus the Rng state are all a checkpoint needs to continue the stream
 * exactly where it stopped.
 */
import { Rng } from '../util/rng.js';
import type { DataPosition } from './train-state.js';

/** The permutation of `count` sequences an epoch with this shuffle seed reads. */
export function epochOrder(count: number, shuffleSeed: number): number[] {
  return new Rng(shuffleSeed).shuffle(Array.from({ length: count }, (_, i) => i));
}

export class BatchStream {
  private order: number[];
  private epoch: number;
  private index: number;
  private shuffleSeed: number;

  /**
   * A stream over `count` sequences. Without `position` the first epoch's seed is drawn from
   * `rng` now; with one (from a checkpoint, `rng` restored to the same moment) it continues there.
   */
  constructor(
    private readonly count: number,
    private readonly rng: Rng,
    position?: DataPosition,
  ) {
    if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`BatchStream needs at least one sequence, got ${count}`);
    if (position !== undefined) {
      if (!Number.isSafeInteger(position.index) || position.index < 0 || position.index > count) {
        throw new RangeError(`data position ${position.index} is outside an epoch of ${count} sequences`);
      }
      this.epoch = position.epoch;
      this.index = position.index;
      this.shuffleSeed = position.shuffleSeed;
    } else {
      this.epoch = 0;
      this.index = 0;
      this.shuffleSeed = rng.nextUint32();
    }
    this.order = epochOrder(count, this.shuffleSeed);
  }

  /** Where the next micro-batch starts. */
  position(): DataPosition {
    return { epoch: this.epoch, index: this.index, shuffleSeed: this.shuffleSeed };
  }

  /** Indices of the next `size` sequences. */
  next(size: number): number[] {
    const out: number[] = [];
    while (out.length < size) {
      if (this.index === this.count) {
        this.epoch += 1;
        this.index = 0;
        this.shuffleSeed = this.rng.nextUint32();
        this.order = epochOrder(this.count, this.shuffleSeed);
      }
      out.push(this.order[this.index++]!);
    }
    return out;
  }
}
