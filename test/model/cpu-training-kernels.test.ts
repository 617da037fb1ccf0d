import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { registerCpuTrainingKernels, unsortedSegmentSumCpu } from '../../src/model/cpu-training-kernels.js';
import { Rng } from '../../src/util/rng.js';

const rng = new Rng(7);
const random = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);

/** Runs f on the cpu backend and returns its values. */
function onCpu(f: () => tf.Tensor): Float32Array {
  return tf.tidy(() => f().dataSync() as Float32Array);
}

const x = random(9 * 4);
const ids = Int32Array.of(2, 0, -1, 2, 5, 1, 7, 0, 2); // repeats, a negative and an out-of-range id (numSegments 6)
const gatherIdx = Int32Array.of(3, 3, 0, 8, 5, 1, 3);
const w = random(gatherIdx.length * 4);
const segmentSum = () => tf.unsortedSegmentSum(tf.tensor2d(x, [9, 4]), tf.tensor1d(ids, 'int32'), 6);
const gatherGrad = () => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, tf.tensor1d(gatherIdx, 'int32')), tf.tensor2d(w, [gatherIdx.length, 4]))))(tf.tensor2d(x, [9, 4]));

let before: { sum: Float32Array; grad: Float32Array };

beforeAll(async () => {
  await tf.setBackend('cpu');
  before = { sum: onCpu(segmentSum), grad: onCpu(gatherGrad) };
  registerCpuTrainingKernels();
});

describe('cpu UnsortedSegmentSum', () => {
  it('matches tfjs’s own kernel, and hand sums, dropping ids outside [0, numSegments)', () => {
    const got = onCpu(segmentSum);
    for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(before.sum[i]!, 6);
    // segment 2 = rows 0, 3, 8; segment 3 and 4 are empty
    for (let j = 0; j < 4; j++) {
      expect(got[2 * 4 + j]).toBeCloseTo(x[j]! + x[12 + j]! + x[32 + j]!, 6);
      expect(got[3 * 4 + j]).toBe(0);
      expect(got[4 * 4 + j]).toBe(0);
    }
  });

  it('gives the same gather gradient as tfjs’s own kernel', () => {
    const got = onCpu(gatherGrad);
    expect(got.length).toBe(before.grad.length);
    for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(before.grad[i]!, 6);
    // row 3 is gathered three times
    expect(got[3 * 4]).toBeCloseTo(w[0]! + w[4]! + w[24]!, 6);
  });

  it('is the kernel the cpu backend now runs', () => {
    expect(tf.getKernel('UnsortedSegmentSum', 'cpu')?.kernelFunc).toBe(unsortedSegmentSumCpu);
  });
});
