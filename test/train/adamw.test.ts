import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { AdamW } from '../../src/train/adamw.js';

// Hand-computed in float64 (PyTorch AdamW order): p0 = [1, -2, 0.5], lr 0.01, λ 0.1,
// β = (0.9, 0.95), ε = 1e-8, gradients g1 then g2. After step 1 every entry moves by
// lr·sign(g) after decay: 1·(1 − 0.001) − 0.01 = 0.989.
const p0 = [1, -2, 0.5];
const g1 = [0.1, -0.2, 0.3];
const g2 = [0.05, 0.1, -0.4];
const afterStep1 = [0.989000001, -1.9880000005, 0.4895000003333333];
const afterStep2 = [0.978618071513434, -1.9833283061897145, 0.4909388300609239];
const m2 = [0.014, -0.008, -0.013];
const v2 = [0.0006, 0.0024, 0.012275];

function grads(name: string, values: number[]): Map<string, tf.Tensor> {
  return new Map([[name, tf.tensor1d(values)]]);
}

describe('AdamW', () => {
  afterAll(() => tf.disposeVariables());

  it('matches a hand-computed two-step example', async () => {
    const w = tf.variable(tf.tensor1d(p0));
    const opt = new AdamW([{ name: 'w', variable: w }], { weightDecay: 0.1 });
    opt.apply(grads('w', g1), 0.01);
    const s1 = w.dataSync();
    afterStep1.forEach((x, i) => expect(s1[i]).toBeCloseTo(x, 6));
    opt.apply(grads('w', g2), 0.01);
    const s2 = w.dataSync();
    afterStep2.forEach((x, i) => expect(s2[i]).toBeCloseTo(x, 6));
    const state = await opt.exportState();
    expect(state.step).toBe(2);
    m2.forEach((x, i) => expect(state.firstMoments.get('w')![i]).toBeCloseTo(x, 7));
    v2.forEach((x, i) => expect(state.secondMoments.get('w')![i]).toBeCloseTo(x, 8));
    opt.dispose();
  });

  it('uses β = (0.9, 0.95), ε = 1e-8, no weight decay by default', async () => {
    const w = tf.variable(tf.tensor1d([3]));
    const opt = new AdamW([{ name: 'w', variable: w }]);
    expect([opt.beta1, opt.beta2, opt.epsilon, opt.weightDecay]).toEqual([0.9, 0.95, 1e-8, 0]);
    opt.apply(grads('w', [0]), 0.5);
    // zero gradient, no decay: unchanged
    expect(w.dataSync()[0]).toBe(3);
    opt.dispose();
  });

  it('leaves masked entries bit-identical, with decay on and non-zero gradients', async () => {
    const start = new Float32Array([0.1, -0.0, 1e-30, 7.25, -3.5, 0.3]);
    const w = tf.variable(tf.tensor2d(start, [2, 3]));
    const mask = tf.tensor2d([1, 0, 0, 1, 0, 1], [2, 3]);
    const opt = new AdamW([{ name: 'w', variable: w, mask }], { weightDecay: 0.5 });
    for (let i = 0; i < 3; i++) opt.apply(new Map([['w', tf.tensor2d([1, 2, NaN, -4, 5, 6], [2, 3])]]), 0.1);
    const after = w.dataSync() as Float32Array;
    const startBits = new Uint32Array(start.buffer);
    const afterBits = new Uint32Array(after.buffer.slice(after.byteOffset, after.byteOffset + after.byteLength));
    for (const i of [1, 2, 4]) expect(afterBits[i]).toBe(startBits[i]);
    for (const i of [0, 3, 5]) expect(after[i]).not.toBe(start[i]);
    const m = (await opt.exportState()).firstMoments.get('w')!;
    for (const i of [1, 2, 4]) expect(m[i]).toBe(0);
    opt.dispose();
    mask.dispose();
  });

  it('masked entries follow the same trajectory as an unmasked run', async () => {
    const a = tf.variable(tf.tensor1d(p0));
    const b = tf.variable(tf.tensor1d(p0));
    const mask = tf.tensor1d([1, 0, 1]);
    const masked = new AdamW([{ name: 'p', variable: a, mask }], { weightDecay: 0.1 });
    const plain = new AdamW([{ name: 'p', variable: b }], { weightDecay: 0.1 });
    for (const g of [g1, g2]) {
      masked.apply(grads('p', g), 0.01);
      plain.apply(grads('p', g), 0.01);
    }
    const [x, y] = [a.dataSync(), b.dataSync()];
    expect(x[0]).toBe(y[0]);
    expect(x[2]).toBe(y[2]);
    expect(x[1]).toBe(-2);
    masked.dispose();
    plain.dispose();
    mask.dispose();
  });

  it('skips decay for parameters marked decay: false', async () => {
    const w = tf.variable(tf.tensor1d([2]));
    const opt = new AdamW([{ name: 'w', variable: w, decay: false }], { weightDecay: 0.5 });
    opt.apply(grads('w', [0]), 0.1);
    expect(w.dataSync()[0]).toBe(2);
    opt.dispose();
  });

  it('reset restarts bias correction; export/import reproduces the trajectory', async () => {
    const w = tf.variable(tf.tensor1d(p0));
    const opt = new AdamW([{ name: 'w', variable: w }], { weightDecay: 0.1 });
    opt.apply(grads('w', [5, 5, 5]), 0.01);
    opt.reset();
    expect(opt.step).toBe(0);
    w.assign(tf.tensor1d(p0));
    opt.apply(grads('w', g1), 0.01);
    afterStep1.forEach((x, i) => expect(w.dataSync()[i]).toBeCloseTo(x, 6));

    const saved = await opt.exportState();
    const savedWeights = w.dataSync().slice();
    const w2 = tf.variable(tf.tensor1d(savedWeights));
    const resumed = new AdamW([{ name: 'w', variable: w2 }], { weightDecay: 0.1 });
    resumed.importState(saved);
    resumed.apply(grads('w', g2), 0.01);
    opt.apply(grads('w', g2), 0.01);
    expect(Array.from(w2.dataSync())).toEqual(Array.from(w.dataSync()));
    afterStep2.forEach((x, i) => expect(w2.dataSync()[i]).toBeCloseTo(x, 6));
    expect(() => resumed.importState({ ...saved, firstMoments: new Map([['other', new Float32Array(3)]]) })).toThrow(
      /unknown parameter/,
    );
    opt.dispose();
    resumed.dispose();
  });

  it('rejects missing, unknown and mis-shaped gradients', async () => {
    const w = tf.variable(tf.tensor1d([1, 2]));
    const opt = new AdamW([{ name: 'w', variable: w }]);
    expect(() => opt.apply(new Map(), 0.1)).toThrow(/missing gradient/);
    expect(() => opt.apply(grads('x', [1, 2]), 0.1)).toThrow(/unknown parameter/);
    expect(() => opt.apply(grads('w', [1, 2, 3]), 0.1)).toThrow(/shape/);
    expect(() => new AdamW([{ name: 'w', variable: w, mask: tf.ones([3]) }])).toThrow(/mask/);
    opt.dispose();
  });

  it('a gradient scale (the clipping coefficient) gives the bits of the pre-scaled gradients, and leaks nothing', async () => {
    const start = tf.tensor2d([0.3, -1.2, 2.5, 0.01, -0.7, 4], [2, 3]);
    const g = tf.tensor2d([0.5, -3, 0.25, 8, -0.125, 1.5], [2, 3]);
    const scale = tf.scalar(0.37);
    const pre = tf.mul(g, scale);
    const run = (scaled: boolean) => {
      const w = tf.variable(start);
      const opt = new AdamW([{ name: 'w', variable: w }], { weightDecay: 0.1 });
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) opt.apply(new Map([['w', scaled ? g : pre]]), 0.05, scaled ? scale : undefined);
      expect(tf.memory().numTensors).toBe(before);
      const out = Float32Array.from(w.dataSync());
      opt.dispose();
      w.dispose();
      return out;
    };
    const withScale = run(true);
    expect(Array.from(withScale)).toEqual(Array.from(run(false)));
    // …and the scale does act: unscaled gradients give other values.
    const w = tf.variable(start);
    const opt = new AdamW([{ name: 'w', variable: w }], { weightDecay: 0.1 });
    for (let i = 0; i < 3; i++) opt.apply(new Map([['w', g]]), 0.05);
    expect(Array.from(w.dataSync())).not.toEqual(Array.from(withScale));
    opt.dispose();
    tf.dispose([start, g, scale, pre, w]);
  });

  it('does not leak tensors per step', async () => {
    const w = tf.variable(tf.randomNormal([4, 4]));
    const opt = new AdamW([{ name: 'w', variable: w, mask: tf.ones([4, 4]) }], { weightDecay: 0.1 });
    const g = new Map([['w', tf.ones([4, 4])]]);
    opt.apply(g, 0.1);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) opt.apply(g, 0.1);
    expect(tf.memory().numTensors).toBe(before);
    opt.dispose();
  });
});
