import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { causalLmLoss } from '../../src/train/loss.js';

// One sequence, 3 positions, vocabulary 3. Tokens [0, 2, 1]; tokens 1 and 2 are targets.
// Position 0 predicts token 2: nll = log(e + e² + e³) − 3 = 0.4076059644443806.
// Position 1 predicts token 1 from uniform logits: nll = log 3 = 1.0986122886681098.
// Position 2 predicts nothing. Mean = 0.7531091265562452.
const logits = [
  [1, 2, 3],
  [0, 0, 0],
  [5, -1, 2],
];
const ids = [[0, 2, 1]];
const mask = [[0, 1, 1]];
const softmax0 = [0.09003057317038043, 0.24472847105479759, 0.6652409557748217];

function run(l: number[][][], i: number[][], m: number[][], reduction?: 'mean' | 'sum') {
  return tf.tidy(() =>
    causalLmLoss(tf.tensor3d(l), tf.tensor2d(i, undefined, 'int32'), tf.tensor2d(m), reduction).dataSync()[0] as number,
  );
}

describe('causalLmLoss', () => {
  it('matches hand-computed mean and sum', () => {
    expect(run([logits], ids, mask)).toBeCloseTo(0.7531091265562452, 6);
    expect(run([logits], ids, mask, 'sum')).toBeCloseTo(0.4076059644443806 + 1.0986122886681098, 6);
    // the first token is never a target, so its mask entry does not matter
    expect(run([logits], ids, [[1, 1, 1]])).toBeCloseTo(0.7531091265562452, 6);
    expect(run([logits], ids, [[0, 0, 1]])).toBeCloseTo(1.0986122886681098, 6);
  });

  it('averages over targets across the batch (padding masked out)', () => {
    const padded = [
      [0, 0, 0],
      [9, 9, 9],
      [9, 9, 9],
    ];
    // second row: one target (token 1 predicted from position 0, uniform logits)
    const value = run([logits, padded], [[0, 2, 1], [2, 1, 0]], [[0, 1, 1], [0, 1, 0]]);
    expect(value).toBeCloseTo((0.4076059644443806 + 2 * 1.0986122886681098) / 3, 6);
  });

  it('is 0 with no targets and finite for extreme logits', () => {
    expect(run([logits], ids, [[0, 0, 0]])).toBe(0);
    const extreme = run([[[1000, 0, -1000], [0, 0, 0], [0, 0, 0]]], [[0, 2, 0]], [[0, 1, 0]]);
    expect(extreme).toBeCloseTo(2000, 2);
    expect(run([[[1000, 0, -1000], [0, 0, 0], [0, 0, 0]]], [[0, 0, 0]], [[0, 1, 0]])).toBe(0);
  });

  it('has the closed-form gradient (softmax − one-hot) / targets', () => {
    const before = tf.memory().numTensors;
    const x = tf.tidy(() => tf.variable(tf.tensor3d([logits])));
    const idT = tf.tensor2d(ids, undefined, 'int32');
    const maskT = tf.tensor2d(mask);
    const { value, grads } = tf.variableGrads(() => causalLmLoss(x, idT, maskT), [x]);
    expect(value.dataSync()[0]).toBeCloseTo(0.7531091265562452, 6);
    const g = grads[x.name]!.arraySync() as number[][][];
    const expected = [
      [softmax0[0]! / 2, softmax0[1]! / 2, (softmax0[2]! - 1) / 2],
      [1 / 6, (1 / 3 - 1) / 2, 1 / 6],
      [0, 0, 0],
    ];
    expected.forEach((row, t) => row.forEach((e, v) => expect(g[0]![t]![v]).toBeCloseTo(e, 6)));
    tf.dispose([value, ...Object.values(grads), idT, maskT]);
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('agrees with autodiff of the naive formula under a sum reduction and an upstream factor', () => {
    const raw = tf.randomNormal([2, 4, 5], 0, 3, 'float32', 7) as tf.Tensor3D;
    const idT = tf.tensor2d([[1, 4, 0, 3], [2, 2, 1, 0]], undefined, 'int32');
    const maskT = tf.tensor2d([[1, 1, 0, 1], [0, 1, 1, 1]]);
    const ours = tf.grad((x: tf.Tensor) => tf.mul(causalLmLoss(x as tf.Tensor3D, idT, maskT, 'sum'), 3))(raw);
    const naive = tf.grad((x: tf.Tensor) => {
      const logp = tf.logSoftmax(tf.slice(x, [0, 0, 0], [2, 3, 5]));
      const next = tf.oneHot(tf.slice(idT, [0, 1], [2, 3]) as tf.Tensor2D, 5);
      const w = tf.expandDims(tf.slice(maskT, [0, 1], [2, 3]), 2);
      return tf.mul(tf.neg(tf.sum(tf.mul(tf.mul(logp, next), w))), 3);
    })(raw);
    const diff = tf.max(tf.abs(tf.sub(ours, naive))).dataSync()[0]!;
    expect(diff).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(ours)).dataSync()[0]).toBeGreaterThan(0.1);
  });

  it('rejects mismatched shapes', () => {
    expect(() => run([logits], [[0, 1]], [[0, 1]])).toThrow(/do not match/);
  });
});
