// A training stage with activation recomputation (--recompute-activations) that fails inside a
// recomputed layer leaves no tensor behind: what the step kept for its backward pass (each
// layer's input and weights saved by the checkpoint, the tape's saved tensors, the
// recomputation's nested tape) is freed on the way out, as the stage's own tensors are. The
// failure is injected by a decoderLayer that throws at its n-th call during training (gradient
// depth > 0; held-out evaluation runs the layers off the tape and is not counted): calls 1..L are
// the first micro-batch's forward, L+1..2L its recomputation in the backward pass.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const failure = vi.hoisted(() => ({ calls: 0, failAt: 0 }));
vi.mock('../../src/model/decoder-layer.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/model/decoder-layer.js')>();
  const tfjs = await import('@tensorflow/tfjs');
  return {
    ...m,
    decoderLayer: (...args: Parameters<typeof m.decoderLayer>) => {
      const out = m.decoderLayer(...args);
      if (tfjs.engine().state.gradientDepth > 0 && ++failure.calls === failure.failAt) throw new Error(`injected failure at training call ${failure.calls}`);
      return out;
    },
  };
});

const LAYERS = 5; // stories260K
let data: SequenceSet;
let held: SequenceSet;
let dir: string;
let cleanup: () => void;
let runs = 0;
const options = (extra: Partial<StageOptions> = {}): StageOptions => ({
  model: STORIES, modelDir: STORIES, run: join(dir, `run-${++runs}`), stage: 1, train: data, eval: held, steps: 2, batchSize: 2, evalBatchSize: 4, lr: 1e-3,
  saveEvery: 0, evalEvery: 1, expand: false, backend: 'cpu', method: 'vanilla', recomputeActivations: true, ...extra,
});

beforeAll(async () => {
  const chunks = (await storyChunks(14)).sequences;
  data = idSet(chunks.slice(0, 10));
  held = idSet(chunks.slice(10, 14));
  ({ dir, cleanup } = tempRun('recompute-throw'));
  await selectBackend('cpu');
  // The first stage of a process also sets up the backend's kernels: not counted.
  failure.failAt = 0;
  await runStage(options({ steps: 1 }));
});
afterAll(() => cleanup());

describe('a stage with activation recomputation that throws inside a recomputed layer leaves no tensor behind', () => {
  it.each([
    { where: 'in the forward (second layer)', failAt: 2, method: 'vanilla' },
    { where: 'in the backward (the recomputation of the last layer)', failAt: LAYERS + 1, method: 'vanilla' },
    { where: 'in the backward (the recomputation of the first layer), LoRA', failAt: 2 * LAYERS, method: 'lora' },
  ] as const)('$where', async ({ failAt, method }) => {
    failure.calls = 0;
    failure.failAt = failAt;
    const before = tf.memory();
    try {
      await expect(runStage(options({ method, ...(method === 'lora' ? { loraRank: 2 } : {}) }))).rejects.toThrow(/injected failure/);
    } finally {
      failure.failAt = 0;
    }
    const after = tf.memory();
    expect(failure.calls).toBe(failAt);
    expect({ tensors: after.numTensors - before.numTensors, bytes: after.numBytes - before.numBytes }).toEqual({ tensors: 0, bytes: 0 });
  });
});
