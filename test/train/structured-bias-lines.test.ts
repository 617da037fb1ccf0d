// `structured` on a model with q/k/v biases (Qwen2): a bias trains
// on its tuned rows like its projection, but it is a vector, so it has no [k, C] line shape.
// The stage's optimizer must still build and step (the bias masked, the matrices by lines), and
// the bias must change on its tuned rows only.
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { AdamW } from '../../src/train/adamw.js';
import { buildStageTrainables, optimizerEntryCount } from '../../src/train/stage-trainables.js';
import { randomSelections, tempRun, writeBiasedStories } from './stage-fixtures.js';

const { dir, cleanup } = tempRun('structured-bias');
afterAll(cleanup);

it('structured with q/k/v biases: the optimizer builds, steps, and moves the tuned bias rows only', async () => {
  await selectBackend('cpu');
  const out = join(dir, 'biased');
  await writeBiasedStories(out, 7, 'qwen2');
  const checkpoint = await Checkpoint.open(out);
  const { spec } = describeCheckpoint(checkpoint);
  expect(spec.qkvBias).toBe(true);
  const selections = randomSelections(spec, 3);
  const t = await buildStageTrainables(checkpoint, spec, { setting: 'structured', selections, operatorSeed: 1 });
  const biasName = 'model.layers.0.self_attn.k_proj.bias';
  const bias = t.params.find((p) => p.name === biasName);
  expect(bias).toBeDefined();
  const before = Float32Array.from(await bias!.variable.data() as Float32Array);
  const opt = new AdamW(t.params);
  const grads = new Map(t.params.map((p) => [p.name, opt.trainedGradient(p.name, tf.onesLike(p.variable))] as const));
  opt.apply(grads, 0.1);
  const after = await bias!.variable.data() as Float32Array;
  const trained = new Set(t.direct.find((d) => d.name === biasName)!.rows);
  expect(trained.size).toBeGreaterThan(0);
  const kv = spec.numKvHeads * spec.headDim;
  expect(trained.size).toBeLessThan(kv);
  for (let i = 0; i < kv; i++) {
    if (trained.has(i)) expect(after[i], `row ${i}`).not.toBe(before[i]);
    else expect(after[i], `row ${i}`).toBe(before[i]);
  }
  // The memory estimate counts the bias's optimizer state whole, the matrix's by its rows.
  const weight = t.direct.find((d) => d.name === 'model.layers.0.self_attn.k_proj.weight')!;
  expect(optimizerEntryCount(t.direct.find((d) => d.name === biasName)!)).toBe(kv);
  expect(optimizerEntryCount(weight)).toBe(weight.rows!.length * spec.hiddenSize);
  tf.dispose([...grads.values()]);
  opt.dispose();
  t.dispose();
  await checkpoint.close();
});
