// Activation recomputation (recomputed-layer.ts, forwardHidden's `recompute`): the loss and the
// gradient of every weight, embeddings included, and of every tensor the hooks read, bit for bit
// the ones the ordinary tape gives, on cpu and on wasm (this repo's own kernels and gradients);
// the observer runs once per layer (the forward), and the hooks once per projection.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import type { LayerActivations, LayerHooks, ProjectionKey } from '../../src/model/layer-hooks.js';
import { expectedTensors } from '../../src/model/architecture.js';
import { parseModelConfig } from '../../src/model/config.js';
import { disposeModelWeights, loadModelWeights, modelWeightsFromArrays, type ModelWeights } from '../../src/model/model-weights.js';
import { Rng } from '../../src/util/rng.js';
import { modelLoss } from '../../src/train/model-loss.js';
import { loadReference } from './helpers.js';

interface Outcome {
  loss: number;
  grads: Map<string, Float32Array>;
  observed: number[];
  observedSums: number[];
  hookCalls: string[];
  tensorsAfter: number;
  tensorsBefore: number;
}

/**
 * Loss and gradients of fixture `name` with every model tensor trainable (`frozen`: only the
 * layers' norms and the LoRA-like factors are), a hook that adds a trainable low-rank term to
 * v_proj and down_proj (and scales any bias), and an observer.
 */
async function gradientsOn(backend: 'cpu' | 'wasm', name: 'stories260K' | 'llama-mha-f32', recompute: boolean, frozen = false, biases = false): Promise<Outcome> {
  await selectBackend(backend);
  const checkpoint = await Checkpoint.open(`fixtures/${name}`);
  const prefix = `${backend}-${name}-${recompute}-${frozen}-${biases}/`;
  const options = { trainable: (n: string) => !frozen || n.includes('norm') || n.endsWith('.bias'), variablePrefix: prefix };
  let model: ModelWeights;
  if (biases) {
    // All seven biases (attention_bias + mlp_bias), seeded, next to the fixture's weights.
    const spec = parseModelConfig({ ...checkpoint.config, attention_bias: true, mlp_bias: true }, 'biased');
    const arrays = new Map<string, Float32Array>();
    for (const t of checkpoint.tensors()) arrays.set(t.name, new Float32Array(await checkpoint.readFloat32(t.name)));
    const rng = new Rng(5);
    for (const [tensorName, dims] of expectedTensors(spec)) {
      if (arrays.has(tensorName)) continue;
      arrays.set(tensorName, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => 0.02 * (rng.next() - 0.5)));
    }
    model = modelWeightsFromArrays(spec, arrays, options);
  } else {
    model = (await loadModelWeights(checkpoint, options)).model;
  }
  await checkpoint.close();
  const ref = await loadReference(name);
  const ids = ref.sequences.slice(0, 2).map((s) => Array.from(s.subarray(0, 16)));
  const B = ids.length;
  const T = ids[0]!.length;
  const input = tf.tensor2d(ids, [B, T], 'int32');
  const mask = tf.ones([B, T]) as tf.Tensor2D;
  const { spec } = model;
  const factors = new Map<string, tf.Variable>();
  const rank = 2;
  const hookCalls: string[] = [];
  const hooks = (layer: number): LayerHooks => ({
    transformWeight(key: ProjectionKey, w: tf.Tensor2D): tf.Tensor2D {
      hookCalls.push(`${layer}.${key}.weight`);
      if (key !== 'v_proj' && key !== 'down_proj') return w;
      const [out, inn] = w.shape;
      const a = factors.get(`${layer}.${key}.a`) ?? tf.variable(tf.randomNormal([rank, inn], 0, 0.05, 'float32', 7 + layer), true, `${prefix}${layer}.${key}.a`);
      const b = factors.get(`${layer}.${key}.b`) ?? tf.variable(tf.randomNormal([out, rank], 0, 0.05, 'float32', 11 + layer), true, `${prefix}${layer}.${key}.b`);
      factors.set(`${layer}.${key}.a`, a);
      factors.set(`${layer}.${key}.b`, b);
      return tf.add(w, tf.matMul(b, a));
    },
    transformBias(key: ProjectionKey, bias: tf.Tensor1D): tf.Tensor1D {
      hookCalls.push(`${layer}.${key}.bias`);
      return tf.mul(bias, 1.5);
    },
  });
  // Make the factors before the tape (so they are variables of the model's step).
  tf.tidy(() => { for (let l = 0; l < spec.numLayers; l++) { const h = hooks(l); for (const k of ['v_proj', 'down_proj'] as const) h.transformWeight!(k, model.tensors.get(`model.layers.${l}.mlp.${k}.weight`) ?? model.tensors.get(`model.layers.${l}.self_attn.${k}.weight`)! as tf.Tensor2D); } });
  hookCalls.length = 0;
  const observed: number[] = [];
  const observedSums: number[] = [];
  const observe = (a: LayerActivations) => {
    observed.push(a.layer);
    observedSums.push(tf.tidy(() => tf.sum(tf.square(a.gate)).dataSync()[0]! + tf.sum(tf.square(a.attention)).dataSync()[0]!));
  };
  const variables = [...model.tensors.values(), ...factors.values()].filter((t): t is tf.Variable => t instanceof tf.Variable && t.trainable);
  const tensorsBefore = tf.memory().numTensors;
  const { value, grads } = tf.engine().gradients(() => modelLoss(model, input, mask, { hooks, observe, recompute }), variables, undefined, true);
  const out = new Map<string, Float32Array>();
  variables.forEach((v, i) => { if (grads[i]) out.set(v.name.slice(prefix.length), grads[i]!.dataSync() as Float32Array); });
  const loss = value.dataSync()[0]!;
  tf.dispose([value, ...grads.filter((g): g is tf.Tensor => g !== undefined && g !== null)]);
  const tensorsAfter = tf.memory().numTensors;
  tf.dispose([input, mask, ...factors.values()]);
  disposeModelWeights(model);
  return { loss, grads: out, observed, observedSums, hookCalls, tensorsAfter, tensorsBefore };
}

function expectSame(a: Outcome, b: Outcome): void {
  expect(a.loss).toBe(b.loss);
  expect([...a.grads.keys()].sort()).toEqual([...b.grads.keys()].sort());
  for (const [name, g] of a.grads) {
    const h = b.grads.get(name)!;
    let differ = 0;
    for (let i = 0; i < g.length; i++) if (g[i] !== h[i]) differ++;
    expect(differ, `${name}: entries that differ`).toBe(0);
  }
  expect(a.observed).toEqual(b.observed);
  expect(a.observedSums).toEqual(b.observedSums);
  expect(a.hookCalls).toEqual(b.hookCalls);
}

describe('activation recomputation', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    for (const name of ['stories260K', 'llama-mha-f32'] as const) {
      it(`${name} on ${backend}: the same loss, gradients (bit for bit), observations and hook calls; nothing leaks`, async () => {
        const plain = await gradientsOn(backend, name, false);
        const recomputed = await gradientsOn(backend, name, true);
        expectSame(recomputed, plain);
        expect(recomputed.grads.size).toBeGreaterThan(10);
        expect(plain.observed.length).toBeGreaterThan(1);
        expect(plain.observed).toEqual(plain.observed.map((_l, i) => i)); // once per layer, in order
        expect(recomputed.tensorsAfter).toBe(recomputed.tensorsBefore);
        expect(plain.tensorsAfter).toBe(plain.tensorsBefore);
      });
    }
  }
  it('all seven biases (trainable, and replaced by the hook): the same, bit for bit', async () => {
    const plain = await gradientsOn('cpu', 'llama-mha-f32', false, false, true);
    const recomputed = await gradientsOn('cpu', 'llama-mha-f32', true, false, true);
    expectSame(recomputed, plain);
    expect([...recomputed.grads.keys()].filter((n) => n.endsWith('.bias')).length).toBeGreaterThanOrEqual(7);
    expect(recomputed.hookCalls.filter((c) => c.endsWith('.bias')).length).toBeGreaterThanOrEqual(7);
  });

  it('frozen projections (biases trainable): only the trainable tensors get gradients, the same ones', async () => {
    const plain = await gradientsOn('cpu', 'llama-mha-f32', false, true, true);
    const recomputed = await gradientsOn('cpu', 'llama-mha-f32', true, true, true);
    expectSame(recomputed, plain);
  });

  it('frozen projections: only the trainable tensors get gradients, the same ones', async () => {
    const plain = await gradientsOn('cpu', 'stories260K', false, true);
    const recomputed = await gradientsOn('cpu', 'stories260K', true, true);
    expectSame(recomputed, plain);
  });
});
