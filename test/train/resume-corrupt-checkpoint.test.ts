// The trainer reads a checkpoint's tensors one at a time as it restores them, so a corrupt tensor
// is found in the middle of the restore rather than before it: the resume must still stop with
// CHECKPOINT_CORRUPT before anything in the run folder changes (metrics.jsonl is cut back to the
// checkpoint's step only after the restore), and resume normally once the checkpoint is whole.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { latestCheckpoint } from '../../src/train/train-state.js';
import { idSet, llamaCheckpointedStage, stageMetrics, storyChunks, tempRun } from './stage-fixtures.js';

let data: SequenceSet;
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  data = idSet((await storyChunks(16)).sequences.slice(0, 12));
  ({ dir, cleanup } = tempRun('resume-corrupt'));
});
afterAll(() => cleanup());

const options = (run: string, extra: Partial<StageOptions>): StageOptions => llamaCheckpointedStage(run, data, extra);

it('a corrupt tensor stops the resume with CHECKPOINT_CORRUPT and leaves the run folder as it was', async () => {
  const run = join(dir, 'run');
  const abort = new AbortController();
  // Interrupted after step 3: the checkpoint saved on the way out is step 3's.
  await expect(runStage(options(run, { signal: abort.signal, onStep: (r) => { if (r.step === 3) abort.abort(); } }))).rejects.toBeInstanceOf(InterruptedError);
  const checkpoint = (await latestCheckpoint(join(run, 'stages', '1', 'checkpoints')))!;
  expect(checkpoint).toMatch(/step-00000003$/);
  const tensorsFile = join(checkpoint, 'tensors.safetensors');
  const metricsFile = join(run, 'stages', '1', 'metrics.jsonl');
  const pristine = await readFile(tensorsFile);
  // A step logged after the checkpoint (as a crash after step 4's line, before its checkpoint,
  // leaves it): a resume cuts it, so the file tells whether the cut came before the restore.
  const last = (await readFile(metricsFile, 'utf8')).trim().split('\n').at(-1)!;
  await writeFile(metricsFile, `${await readFile(metricsFile, 'utf8')}${JSON.stringify({ ...JSON.parse(last), step: 4 })}\n`);
  const metricsBefore = await readFile(metricsFile, 'utf8');
  expect(metricsBefore.trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step)).toEqual([1, 2, 3, 4]);

  const flipped = Buffer.from(pristine);
  flipped[flipped.length - 5]! ^= 0x01; // in the data of the file's last tensor
  await writeFile(tensorsFile, flipped);
  await expect(runStage(options(run, { resume: true }))).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining('does not match its recorded sha256') });
  expect(await readFile(metricsFile, 'utf8')).toBe(metricsBefore);
  expect(await latestCheckpoint(join(run, 'stages', '1', 'checkpoints'))).toBe(checkpoint);

  await writeFile(tensorsFile, pristine);
  const steps: number[] = [];
  await runStage(options(run, { resume: true, onStep: (r) => { steps.push(r.step); } }));
  expect(steps).toEqual([4]);
  expect((await stageMetrics(run)).map((l) => l.step)).toEqual([1, 2, 3, 4]);
}, 120_000);
