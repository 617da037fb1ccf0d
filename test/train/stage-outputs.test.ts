// The stage's trained tensors: checked for NaN/Inf on the device before anything is written (one
// boolean read per tensor), then read one at a time as trained.safetensors' writer reaches them.
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { VerificationError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { collectStageTensors, writeStageFiles } from '../../src/train/stage-outputs.js';
import type { StageTrainables } from '../../src/train/stage-trainables.js';

const dir = mkdtempSync(join(tmpdir(), 'apex-stage-outputs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function trainables(values: Record<string, number[]>): StageTrainables {
  const tensors = new Map(Object.entries(values).map(([name, v]) => [name, tf.variable(tf.tensor2d(v, [2, v.length / 2]))]));
  return {
    model: { spec: {} as ModelSpec, tensors },
    direct: Object.entries(values).map(([name, v]) => ({ name, shape: [2, v.length / 2] })),
    operators: undefined,
    lora: undefined,
  } as unknown as StageTrainables;
}

it('reads the trained tensors when trained.safetensors is written: the file holds their values at that time', async () => {
  const t = trainables({ 'model.a.weight': [1, 2, 3, 4], 'model.b.weight': [0.5, -1.5] });
  const tensors = await collectStageTensors({} as ModelSpec, t);
  const [a] = [t.model.tensors.get('model.a.weight') as tf.Variable];
  // Not read yet: a change before the write is what the file holds.
  a.assign(tf.tensor2d([4, 3, 2, 1], [2, 2]));
  const out = join(dir, 'ok');
  await import('node:fs/promises').then((fs) => fs.mkdir(out));
  await writeStageFiles({ dir: out, spec: {} as ModelSpec, stage: 1, tensors, trainedMetadata: { stage: '1', setting: 'full' }, metrics: [] } as never);
  const f = await SafetensorsFile.open(join(out, 'trained.safetensors'));
  expect(Array.from(await f.readFloat32('model.a.weight'))).toEqual([4, 3, 2, 1]);
  expect(Array.from(await f.readFloat32('model.b.weight'))).toEqual([0.5, -1.5]);
  await f.close();
});

it('refuses a trained tensor holding NaN or Inf before writing anything, naming it and the first bad index', async () => {
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
    const t = trainables({ 'model.a.weight': [1, 2, 3, 4], 'model.b.weight': [0.5, 2, 7, bad, 1, bad] });
    const err = await collectStageTensors({} as ModelSpec, t).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationError);
    expect(err).toMatchObject({ code: 'NON_FINITE_TENSOR' });
    expect((err as Error).message).toContain(`tensor 'model.b.weight' holds ${bad} at flat index 3 after training`);
  }
  expect(readdirSync(dir).filter((n) => n !== 'ok')).toEqual([]);
});
