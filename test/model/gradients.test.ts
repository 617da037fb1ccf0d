// Gradients of a LLaMA loss with respect to every weight, embeddings included, on wasm (with
// apex's UnsortedSegmentSum kernel and explicit-transpose matMul gradient) against cpu (tfjs's own).
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { disposeModelWeights, forwardLogits, loadModelWeights } from '../../src/model/model-weights.js';
import { loadReference } from './helpers.js';

async function gradientsOn(backend: 'cpu' | 'wasm', ids: number[][]): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  await selectBackend(backend);
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  const { model } = await loadModelWeights(checkpoint, { trainable: () => true, variablePrefix: `${backend}/` });
  await checkpoint.close();
  const B = ids.length;
  const T = ids[0]!.length;
  const input = tf.tensor2d(ids, [B, T], 'int32');
  const targets = tf.oneHot(tf.tensor2d(ids.map((s) => s.slice(1)), [B, T - 1], 'int32'), model.spec.vocabSize);
  const { value, grads } = tf.variableGrads(() => {
    const logits = forwardLogits(model, input);
    const logp = tf.logSoftmax(tf.slice(logits, [0, 0, 0], [B, T - 1, model.spec.vocabSize]));
    return tf.neg(tf.mean(tf.sum(tf.mul(logp, targets), -1))) as tf.Scalar;
  });
  const out = new Map<string, Float32Array>();
  for (const [name, g] of Object.entries(grads)) out.set(name.slice(backend.length + 1), g.dataSync() as Float32Array);
  const loss = value.dataSync()[0]!;
  tf.dispose([value, input, targets, ...Object.values(grads)]);
  disposeModelWeights(model);
  return { loss, grads: out };
}

describe('training gradients on wasm', () => {
  it('equal the cpu backend within 1e-4 relative for every tensor, embeddings included', async () => {
    const ref = await loadReference('stories260K');
    const ids = ref.sequences.map((s) => Array.from(s.subarray(0, 24)));
    const cpu = await gradientsOn('cpu', ids);
    const wasm = await gradientsOn('wasm', ids);
    expect(Math.abs(wasm.loss - cpu.loss)).toBeLessThan(1e-5);
    expect([...wasm.grads.keys()].sort()).toEqual([...cpu.grads.keys()].sort());
    expect(cpu.grads.has('model.embed_tokens.weight')).toBe(true);
    expect(cpu.grads.size).toBe(2 + 5 * 9);
    for (const [name, c] of cpu.grads) {
      const w = wasm.grads.get(name)!;
      let num = 0;
      let den = 0;
      for (let i = 0; i < c.length; i++) {
        num += (w[i]! - c[i]!) ** 2;
        den += c[i]! ** 2;
      }
      expect(den, name).toBeGreaterThan(0);
      expect(Math.sqrt(num / den), name).toBeLessThan(1e-4);
    }
  });
});
