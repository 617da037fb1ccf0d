/**
 * The APEX score recorder that stays on during training (APEX-METHOD §2): for every training
 * micro-batch and layer it takes the unit activation norms from the operator-augmented forward
 * (the attention output after the mixed values, the gate activation after the gate transform)
 * and adds that micro-batch's Top-k / Min-k counts with the same code analysis uses
 * (RankCountRecorder). The counts of stage t select the units of stage t + 1.
 *
 * Sums of squares are computed on the backend inside the forward (one [H] and one [I] vector
 * per layer, kept past the forward's tidy scope) and read after the optimizer step, all of a
 * step's in one read; a step
 * that does not complete (interrupt, NaN) records nothing, so the counts always belong to
 * whole optimizer steps, like the checkpoint they are saved in.
 *
 * Padding is excluded: a token counts when its weight is 1. For chat data the padding is what
 * follows the conversation's real tokens (`SequenceSet.lengths`), so a trailing user turn
 * counts too; a chat set made without lengths falls back to "after the last loss target".
 * Packed text and input ids count every token.
 */
import * as tf from '@tensorflow/tfjs';
import { readFloat32 } from '../model/tensor-read.js';
import type { LayerActivations, LayerObserver } from '../model/layer-hooks.js';
import { RankCountRecorder, type RankRecorderState, type RecorderShape } from '../ops/rank-counts.js';
import { realTokens, type SequenceSet } from './data.js';

/** Per-token weights (1 = counts) of one sequence for the activation norms. */
export function activationTokenWeights(set: SequenceSet, index: number): Float32Array {
  return new Float32Array(set.seqLen).fill(1).fill(0, realTokens(set, index));
}

interface PendingLayer {
  readonly head: tf.Tensor1D;
  readonly channel: tf.Tensor1D;
}

export class TrainingScoreRecorder {
  readonly counts: RankCountRecorder;
  /** Micro-batches of the step in progress; each maps layer → its kept sums of squares. */
  private pending: Map<number, PendingLayer>[] = [];
  /** Token weights of the micro-batch in progress; undefined when every token counts. */
  private weights: tf.Tensor3D | undefined;

  constructor(shapeOrState: RecorderShape | RankRecorderState) {
    this.counts = 'version' in shapeOrState ? RankCountRecorder.fromState(shapeOrState) : new RankCountRecorder(shapeOrState);
  }

  /**
   * Starts a micro-batch whose token weights are `weights` [B, T] (0/1) and returns the observer
   * to hand to the forward pass.
   */
  beginMicroBatch(weights: Float32Array, batch: number, seqLen: number): LayerObserver {
    this.weights?.dispose();
    // Packed text and input ids count every token: no masking multiplications then.
    this.weights = weights.every((x) => x === 1) ? undefined : tf.tensor3d(weights, [batch, seqLen, 1]);
    const layers = new Map<number, PendingLayer>();
    this.pending.push(layers);
    const { numHeads } = this.counts.shape;
    return (a: LayerActivations) => {
      const w = this.weights;
      const masked = (x: tf.Tensor3D) => (w ? tf.mul(x, w) : x);
      const [B, T, width] = a.attention.shape;
      const kept = tf.tidy(() => {
        const head = tf.sum(tf.square(tf.reshape(masked(a.attention), [B, T, numHeads, width / numHeads])), [0, 1, 3]) as tf.Tensor1D;
        const channel = tf.sum(tf.square(masked(a.gate)), [0, 1]) as tf.Tensor1D;
        return { head: tf.keep(head), channel: tf.keep(channel) };
      });
      layers.set(a.layer, kept);
    };
  }

  /** Adds the counts of every micro-batch of the completed step and frees their tensors. */
  async commitStep(): Promise<void> {
    const batches = this.pending;
    this.pending = [];
    try {
      const { numLayers } = this.counts.shape;
      const parts: tf.Tensor1D[] = [];
      for (const layers of batches) {
        for (let layer = 0; layer < numLayers; layer++) {
          const sums = layers.get(layer);
          if (sums === undefined) throw new Error(`score recorder: layer ${layer} reported no activations for a micro-batch`);
          parts.push(sums.head, sums.channel);
        }
      }
      if (parts.length === 0) return;
      // One read for the whole step: on webgpu every read is a round trip that waits for the
      // GPU's queue, and a step has two vectors per layer and micro-batch.
      const joined = tf.concat(parts);
      const all = await readFloat32(joined).finally(() => joined.dispose());
      let at = 0;
      for (let k = 0; k < parts.length; k += 2) {
        const heads = parts[k]!.size;
        const channels = parts[k + 1]!.size;
        this.counts.record((k / 2) % numLayers, all.subarray(at, at + heads), all.subarray(at + heads, at + heads + channels));
        at += heads + channels;
      }
    } finally {
      disposeBatches(batches);
    }
  }

  /** Drops what the step in progress recorded (interrupted or failed step). */
  discardStep(): void {
    disposeBatches(this.pending);
    this.pending = [];
  }

  state(): RankRecorderState {
    return this.counts.state();
  }

  dispose(): void {
    this.discardStep();
    this.weights?.dispose();
    this.weights = undefined;
  }
}

function disposeBatches(batches: readonly Map<number, PendingLayer>[]): void {
  for (const layers of batches) for (const { head, channel } of layers.values()) tf.dispose([head, channel]);
}
