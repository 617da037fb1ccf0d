import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { type ModelWeights, disposeModelWeights, forwardLogits, loadModelWeights } from '../../src/model/model-weights.js';
import { AdamW } from '../../src/train/adamw.js';
import { LoraAdapters } from '../../src/train/lora.js';
import { causalLmLoss } from '../../src/train/loss.js';
import { Rng } from '../../src/util/rng.js';

let model: ModelWeights;
beforeAll(async () => {
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  model = (await loadModelWeights(checkpoint)).model;
  await checkpoint.close();
});
afterAll(() => {
  disposeModelWeights(model);
  tf.disposeVariables();
});

describe('LoRA on the forward pass (stories260K)', () => {
  const rng = new Rng(3);
  const ids = tf.tensor2d(Array.from({ length: 16 }, () => rng.nextInt(512)), [1, 16], 'int32');
  const mask = tf.ones([1, 16]) as tf.Tensor2D;

  it('starts function-identical to the base model and lowers the loss when trained', () => {
    const lora = LoraAdapters.create(model.spec, { rank: 4, seed: 9 });
    const hooks = { hooks: (layer: number) => lora.hooksForLayer(layer) };
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(forwardLogits(model, ids, hooks), forwardLogits(model, ids)))).dataSync()[0]);
    expect(diff).toBe(0);

    const params = lora.parameters();
    const opt = new AdamW(params);
    const variables = params.map((p) => p.variable);
    const losses: number[] = [];
    for (let step = 0; step < 5; step++) {
      const { value, grads } = tf.variableGrads(() => causalLmLoss(forwardLogits(model, ids, hooks), ids, mask), variables);
      losses.push(value.dataSync()[0]!);
      opt.apply(new Map(params.map((p) => [p.name, grads[p.variable.name]!])), 1e-2);
      tf.dispose([value, ...Object.values(grads)]);
    }
    expect(losses[4]!).toBeLessThan(losses[0]! - 1);
    opt.dispose();
    lora.dispose();
  });
});
