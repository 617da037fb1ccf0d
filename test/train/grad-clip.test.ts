import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { GradientAccumulator } from '../../src/train/grad-accumulation.js';
import { clipByGlobalNorm, globalNorm } from '../../src/train/grad-clip.js';

function values(m: Map<string, tf.Tensor>, name: string): number[] {
  return Array.from(m.get(name)!.dataSync());
}

describe('clipByGlobalNorm', () => {
  // global norm of [3] and [4, 0] is 5
  const grads = () => new Map<string, tf.Tensor>([['a', tf.tensor1d([3])], ['b', tf.tensor1d([4, 0])]]);

  it('returns the pre-clip norm and scales by maxNorm / (norm + 1e-6) when above', async () => {
    const g = grads();
    expect(await globalNorm(g)).toBeCloseTo(5, 6);
    const { grads: clipped, norm } = await clipByGlobalNorm(g, 1);
    expect(norm).toBeCloseTo(5, 6);
    const c = 1 / (5 + 1e-6);
    expect(values(clipped, 'a')[0]).toBeCloseTo(3 * c, 6);
    expect(values(clipped, 'b')).toEqual([expect.closeTo(4 * c, 6), 0]);
    expect(await globalNorm(clipped)).toBeCloseTo(1, 5);
  });

  it('leaves gradients below the limit unchanged', async () => {
    const { grads: out, norm } = await clipByGlobalNorm(grads(), 10);
    expect(norm).toBeCloseTo(5, 6);
    expect(values(out, 'a')).toEqual([3]);
    expect(values(out, 'b')).toEqual([4, 0]);
    expect((await clipByGlobalNorm(grads(), Infinity)).norm).toBeCloseTo(5, 6);
  });

  it('reports a non-finite norm without scaling', async () => {
    const { grads: out, norm } = await clipByGlobalNorm(new Map([['a', tf.tensor1d([Infinity, 1])]]), 1);
    expect(norm).toBe(Infinity);
    expect(values(out, 'a')).toEqual([Infinity, 1]);
    await expect(clipByGlobalNorm(grads(), 0)).rejects.toThrow();
  });
});

describe('GradientAccumulator', () => {
  it('sums micro-batches and scales by 1/count by default', async () => {
    const acc = new GradientAccumulator();
    acc.add(new Map([['w', tf.tensor1d([1, 2])]]));
    acc.add(new Map([['w', tf.tensor1d([3, -6])]]));
    expect(acc.count).toBe(2);
    expect(values(acc.take(), 'w')).toEqual([2, -2]);
    expect(acc.count).toBe(0);
    acc.add(new Map([['w', tf.tensor1d([1, 1])]]));
    acc.add(new Map([['w', tf.tensor1d([1, 3])]]));
    expect(values(acc.take(0.25), 'w')).toEqual([0.5, 1]);
    expect(() => acc.take()).toThrow(/nothing/);
  });

  it('rejects micro-batches with different parameters and does not leak', async () => {
    const acc = new GradientAccumulator();
    const g = new Map([['w', tf.ones([3])]]);
    acc.add(g);
    expect(() => acc.add(new Map([['v', tf.ones([3])]]))).toThrow(/same parameters/);
    acc.dispose();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) acc.add(g);
    tf.dispose([...acc.take().values()]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
