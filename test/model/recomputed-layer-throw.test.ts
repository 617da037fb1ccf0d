// A training step that throws inside a recomputed layer (recomputed-layer.ts) frees what it kept
// for the backward pass: each layer's input, weights and rope tables saved by the checkpoint, the
// tape's own saved tensors, and those of the recomputation's nested tape. The throw is injected by
// a decoderLayer that fails at its n-th call (before or after running the real layer): calls
// 1..L are the forward, L+1..2L the recomputation in the backward (last layer first). Without the
// fix the engine's tensor count stayed higher after each of these throws.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { disposeModelWeights, loadModelWeights, type ModelWeights } from '../../src/model/model-weights.js';
import { tapeGradients } from '../../src/model/tape-gradients.js';
import { modelLoss } from '../../src/train/model-loss.js';
import { loadReference } from './helpers.js';

const failure = vi.hoisted(() => ({ calls: 0, failAt: 0, when: 'before' as 'before' | 'after' }));
vi.mock('../../src/model/decoder-layer.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/model/decoder-layer.js')>();
  return {
    ...m,
    decoderLayer: (...args: Parameters<typeof m.decoderLayer>) => {
      const call = ++failure.calls;
      if (call === failure.failAt && failure.when === 'before') throw new Error(`injected failure before call ${call}`);
      const out = m.decoderLayer(...args);
      if (call === failure.failAt) throw new Error(`injected failure after call ${call}`);
      return out;
    },
  };
});

class StepFailure extends Error {}

let model: ModelWeights;
let ids: tf.Tensor2D;
let mask: tf.Tensor2D;
let variables: tf.Variable[];

beforeAll(async () => {
  await selectBackend('cpu');
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  model = (await loadModelWeights(checkpoint, { trainable: () => true, variablePrefix: 'recompute-throw/' })).model;
  await checkpoint.close();
  const ref = await loadReference('stories260K');
  const rows = ref.sequences.slice(0, 2).map((s) => Array.from(s.subarray(0, 16)));
  ids = tf.tensor2d(rows, [rows.length, 16], 'int32');
  mask = tf.ones([rows.length, 16]) as tf.Tensor2D;
  variables = [...model.tensors.values()].filter((t): t is tf.Variable => t instanceof tf.Variable && t.trainable);
});
afterAll(() => {
  tf.dispose([ids, mask]);
  disposeModelWeights(model);
});

/** One step's gradients with the decoderLayer failing at call `failAt` (0: never); the tensors it left behind. */
function stepLeaves(failAt: number, when: 'before' | 'after', recompute = true, lossFails = false): number {
  failure.calls = 0;
  failure.failAt = failAt;
  failure.when = when;
  const before = tf.memory().numTensors;
  try {
    const { value, grads } = tapeGradients(
      () => {
        const loss = modelLoss(model, ids, mask, { recompute });
        if (lossFails) throw new StepFailure('injected failure after the loss');
        return loss;
      },
      variables,
      undefined,
      true,
    );
    tf.dispose([value, ...grads.filter((g): g is tf.Tensor => g !== undefined && g !== null)]);
  } catch (e) {
    if (failAt === 0 && !lossFails) throw e;
    expect(String(e)).toMatch(/injected failure/);
  } finally {
    failure.failAt = 0;
  }
  return tf.memory().numTensors - before;
}

describe('a throw inside a recomputed layer frees what the step kept', () => {
  it('the step that does not throw leaves nothing (and runs each layer twice)', () => {
    stepLeaves(0, 'before'); // the backend's first use makes tensors of its own
    expect(stepLeaves(0, 'before')).toBe(0);
    expect(failure.calls).toBe(2 * model.spec.numLayers);
  });

  it.each(['before', 'after'] as const)('in the forward of the second layer (%s it runs)', (when) => {
    expect(stepLeaves(2, when)).toBe(0);
  });

  it.each(['before', 'after'] as const)('in the recomputation of the last layer, the first of the backward (%s it runs)', (when) => {
    expect(stepLeaves(model.spec.numLayers + 1, when)).toBe(0);
  });

  it.each(['before', 'after'] as const)('in the recomputation of the first layer, the last of the backward (%s it runs)', (when) => {
    expect(stepLeaves(2 * model.spec.numLayers, when)).toBe(0);
  });

  it('after every layer ran, in the loss (with and without recomputation)', () => {
    expect(stepLeaves(0, 'before', true, true)).toBe(0);
    expect(stepLeaves(0, 'before', false, true)).toBe(0);
  });

  it('in the forward without recomputation', () => {
    expect(stepLeaves(2, 'after', false)).toBe(0);
  });
});
