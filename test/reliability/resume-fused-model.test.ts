// `apex finetune --resume` on a stage that finished training (issue 8): its fused model counts
// as done only when complete and verified — apex expand's record written last, every recorded
// shard present at its recorded size, fused from this stage's current training outputs.
// Otherwise the stage is fused again, to the same bytes an uninterrupted fusion gives.
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { fusedModelState } from '../../src/pipeline/fused-model-state.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { tempDir } from '../io/helpers.js';
import { STORIES, storyChunks } from '../train/stage-fixtures.js';

describe('resuming a trained stage re-fuses a model that is not complete and verified', () => {
  let run: string;
  let options: StageOptions;
  let model: string;
  let fusedSha: string;
  const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

  beforeAll(async () => {
    run = join(await tempDir('apex-resume-fused-'), 'run');
    options = { model: STORIES, modelDir: STORIES, run, stage: 1, method: 'vanilla', train: await storyChunks(32), steps: 2, batchSize: 4, backend: 'wasm', resume: true };
    const first = await runStage(options);
    model = first.modelDir!;
    fusedSha = await sha(join(model, 'model.safetensors'));
  }, 120_000);

  async function resumeAndCheck(): Promise<string[]> {
    const said: string[] = [];
    const r = await runStage({ ...options, progress: (m) => said.push(m) });
    expect(r.status).toBe('complete');
    expect(await fusedModelState(run, 1)).toEqual({ kind: 'complete' });
    expect(await sha(join(model, 'model.safetensors'))).toBe(fusedSha);
    return said;
  }

  it('a complete fused model is left alone', async () => {
    expect(await fusedModelState(run, 1)).toEqual({ kind: 'complete' });
    const before = statSync(join(model, 'model.safetensors'));
    const said = await resumeAndCheck();
    expect(said.join('\n')).not.toMatch(/fusing stage 1 again/);
    expect(statSync(join(model, 'model.safetensors')).ino).toBe(before.ino);
  });

  it('a model folder with config.json but no record (a half copy) is fused again', async () => {
    await rm(join(model, 'apex_run.json'));
    expect(await fusedModelState(run, 1)).toMatchObject({ kind: 'stale', reason: expect.stringContaining('no apex_run.json') });
    expect(existsSync(join(model, 'config.json'))).toBe(true);
    expect((await resumeAndCheck()).join('\n')).toMatch(/fusing stage 1 again/);
  });

  it('a shard shorter than its record is fused again', async () => {
    await truncate(join(model, 'model.safetensors'), 1000);
    expect(await fusedModelState(run, 1)).toMatchObject({ kind: 'stale', reason: expect.stringContaining('model.safetensors is 1000 bytes') });
    await resumeAndCheck();
  });

  it('a model fused from other training outputs is fused again', async () => {
    const recordPath = join(run, 'stages', '1', 'apex_run.json');
    const original = await readFile(recordPath, 'utf8');
    const record = JSON.parse(original) as { outputs: { stage: { files: { file: string; sha256: string }[] } } };
    record.outputs.stage.files.find((f) => f.file === 'trained.safetensors')!.sha256 = '0'.repeat(64);
    await writeFile(recordPath, JSON.stringify(record));
    expect(await fusedModelState(run, 1)).toMatchObject({ kind: 'stale', reason: expect.stringContaining("this stage's trained.safetensors") });
    await writeFile(recordPath, original);
    expect(await fusedModelState(run, 1)).toEqual({ kind: 'complete' });
  });
});
