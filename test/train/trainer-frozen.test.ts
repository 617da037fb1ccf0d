// The `operators` setting trains M, a and b only: after training, every tensor of the
// in-memory model is bit-identical to the checkpoint it was loaded from, while the operators
// moved away from their identity initialisation.
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { planForStages } from '../../src/train/lr-schedule.js';
import { buildStageTrainables } from '../../src/train/stage-trainables.js';
import { train } from '../../src/train/trainer.js';
import { randomSelections, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir, cleanup } = tempRun('frozen');
afterAll(cleanup);

it('operators: frozen tensors keep every bit; the operators train', async () => {
  await selectBackend('wasm');
  const checkpoint = await Checkpoint.open(STORIES);
  const { spec } = describeCheckpoint(checkpoint);
  const selections = randomSelections(spec, 11);
  const t = await buildStageTrainables(checkpoint, spec, { setting: 'operators', selections, operatorSeed: 3 });
  expect(t.params.every((p) => p.name.includes('.apex.'))).toBe(true);
  const data = await storyChunks(32);
  const result = await train({
    model: t.model, params: t.params, hooks: t.hooks, train: data, stage: 1, steps: 4, lrPlan: planForStages(3e-2, [4]), globalStepOffset: 0,
    batchSize: 4, gradAccum: 1, gradClip: 1, adamw: {}, evalEvery: 0, saveEvery: 0, keepCheckpoints: 1,
    checkpointsDir: join(dir, 'checkpoints'), metricsPath: join(dir, 'metrics.jsonl'), dataSeed: 1,
  });
  expect(result.steps).toBe(4);
  for (const name of checkpoint.tensorNames()) {
    const base = new Uint32Array((await checkpoint.readFloat32(name)).buffer);
    const now = new Uint32Array((t.model.tensors.get(name)!.dataSync() as Float32Array).slice().buffer);
    expect(now.length, name).toBe(base.length);
    let differing = 0;
    for (let i = 0; i < base.length; i++) if (now[i] !== base[i]) differing++;
    expect(differing, `${name} changed`).toBe(0);
  }
  const op = t.operators![0]!;
  expect(Math.max(...Array.from(op.mlp!.B2.dataSync(), Math.abs))).toBeGreaterThan(1e-3);
  expect(Math.max(...Array.from(op.attn!.a.dataSync(), (v) => Math.abs(v - 1)))).toBeGreaterThan(1e-3);
  t.dispose();
  await checkpoint.close();
});
