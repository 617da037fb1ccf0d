// A tied model whose checkpoint also stores lm_head.weight (transformers ignores it and uses the
// embedding; so does apex): when the embedding trains, the stored copy is written with the
// trained embedding, not left untrained; when it does not, the copy keeps its bytes.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { f32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { runStage } from '../../src/train/stage.js';
import { readAllF32, STORIES, storyChunks, tempRun } from '../train/stage-fixtures.js';

const { dir: root, cleanup } = tempRun('tied-head');
afterAll(cleanup);

/** stories260K (tied) with a stored lm_head.weight that differs from the embedding. */
async function modelWithStoredHead(): Promise<string> {
  const model = join(root, 'model');
  mkdirSync(model, { recursive: true });
  for (const f of readdirSync(STORIES)) if (f !== 'model.safetensors') copyFileSync(join(STORIES, f), join(model, f));
  const tensors = await readAllF32(join(STORIES, 'model.safetensors'));
  const embedding = tensors.get('model.embed_tokens.weight')!;
  const stale = embedding.values.map((v) => v * 0.5);
  await writeSafetensors(join(model, 'model.safetensors'), [...[...tensors].map(([name, t]) => f32Tensor(name, t.shape, t.values)), f32Tensor('lm_head.weight', embedding.shape, stale)], { format: 'pt' });
  return model;
}

async function bytesOf(path: string, name: string): Promise<Buffer> {
  const f = await SafetensorsFile.open(path);
  try {
    return Buffer.from(await f.readBytes(name));
  } finally {
    await f.close();
  }
}

it('a stored lm_head.weight of a tied model gets the trained embedding; untrained, it keeps its bytes', async () => {
  const model = await modelWithStoredHead();
  const train = await storyChunks(32);
  const vanilla = join(root, 'vanilla');
  await runStage({ model, modelDir: model, run: vanilla, stage: 1, method: 'vanilla', train, steps: 2, batchSize: 4, lr: 1e-3, backend: 'cpu', expand: true });
  const out = join(vanilla, 'stages', '1', 'model', 'model.safetensors');
  const head = await bytesOf(out, 'lm_head.weight');
  const embedding = await bytesOf(out, 'model.embed_tokens.weight');
  expect(head.equals(embedding)).toBe(true);
  expect(embedding.equals(await bytesOf(join(model, 'model.safetensors'), 'model.embed_tokens.weight'))).toBe(false);

  const operators = join(root, 'operators');
  await runStage({ model, modelDir: model, run: operators, stage: 1, method: 'apex', setting: 'operators', train, steps: 1, batchSize: 4, backend: 'cpu', expand: true });
  const kept = await bytesOf(join(operators, 'stages', '1', 'model', 'model.safetensors'), 'lm_head.weight');
  expect(kept.equals(await bytesOf(join(model, 'model.safetensors'), 'lm_head.weight'))).toBe(true);
});
