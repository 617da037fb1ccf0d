// The training loss with the logits made a block of positions at a time (model-loss.ts: what
// webgpu needs where [tokens, vocab] logits exceed its largest storage binding) against the
// same loss in one piece, on stories260K (tied embeddings, so the head's gradient meets the
// embedding's): the same value and gradients up to float rounding, for the mean and the sum.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { disposeModelWeights, forwardLogits, loadModelWeights, type ModelWeights } from '../../src/model/model-weights.js';
import { causalLmLoss, type LossReduction } from '../../src/train/loss.js';
import { logitRowsWithin, modelLoss } from '../../src/train/model-loss.js';
import { Rng } from '../../src/util/rng.js';

let model: ModelWeights;
beforeAll(async () => {
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  model = (await loadModelWeights(checkpoint)).model;
  await checkpoint.close();
});
afterAll(() => disposeModelWeights(model));

const VOCAB = 512;
const rng = new Rng(11);
const ids = tf.tensor2d(Array.from({ length: 3 * 16 }, () => rng.nextInt(VOCAB)), [3, 16], 'int32');
// Padding at the end of the second sequence and a prompt at the start of the third.
const mask = tf.tensor2d(Array.from({ length: 3 * 16 }, (_, i) => ((i >= 16 + 12 && i < 32) || (i >= 32 && i < 32 + 5) ? 0 : 1)), [3, 16]);

function lossAndGrads(f: () => tf.Scalar): { loss: number; grads: Float32Array[] } {
  const xs = ['model.embed_tokens.weight', 'model.layers.2.mlp.down_proj.weight', 'model.norm.weight'].map((n) => model.tensors.get(n)!);
  const { value, grads } = tf.engine().gradients(f, xs, undefined, true);
  const out = { loss: value.dataSync()[0]!, grads: grads.map((g) => g.dataSync() as Float32Array) };
  tf.dispose([value, ...grads]);
  return out;
}

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

describe('modelLoss', () => {
  it('in one piece is exactly causalLmLoss of forwardLogits', () => {
    for (const reduction of ['mean', 'sum'] as LossReduction[]) {
      const whole = lossAndGrads(() => modelLoss(model, ids, mask, { reduction, maxLogitBytes: Infinity }));
      const direct = lossAndGrads(() => causalLmLoss(forwardLogits(model, ids), ids, mask, reduction));
      expect(whole.loss).toBe(direct.loss);
      whole.grads.forEach((g, i) => expect(maxAbsDiff(g, direct.grads[i]!)).toBe(0));
    }
  });

  it.each([
    ['7 positions per block (uneven last block)', 7],
    ['1 position per block', 1],
    ['16 positions per block (one sequence each)', 16],
  ])('in blocks of %s equals the loss in one piece', (_, rows) => {
    for (const reduction of ['mean', 'sum'] as LossReduction[]) {
      const whole = lossAndGrads(() => modelLoss(model, ids, mask, { reduction, maxLogitBytes: Infinity }));
      const blocks = lossAndGrads(() => modelLoss(model, ids, mask, { reduction, maxLogitBytes: 4 * VOCAB * rows }));
      expect(Math.abs(blocks.loss - whole.loss)).toBeLessThanOrEqual(2e-6 * Math.abs(whole.loss));
      blocks.grads.forEach((g, i) => expect(maxAbsDiff(g, whole.grads[i]!)).toBeLessThanOrEqual(1e-5 * maxAbs(whole.grads[i]!)));
    }
  });

  it('sizes blocks by the bytes of float32 logits rows', () => {
    expect(logitRowsWithin(Infinity, VOCAB)).toBe(Infinity);
    expect(logitRowsWithin(4 * VOCAB * 7, VOCAB)).toBe(7);
    expect(logitRowsWithin(4 * VOCAB * 7 + 4 * VOCAB - 1, VOCAB)).toBe(7);
    expect(logitRowsWithin(10, VOCAB)).toBe(1);
    // A 128K vocabulary against a 2 GiB binding: 4,185 positions per block (2³¹ / (4 · 128,256) = 4185.9).
    expect(logitRowsWithin(2 ** 31, 128_256)).toBe(4185);
  });
});
