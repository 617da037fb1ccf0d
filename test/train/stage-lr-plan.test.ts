// A later stage run with other flags than the earlier stages planned for it (apex finetune
// --stage 2 on its own): its peak rate defaults to the run's, and a stage of other length
// continues from the rate the previous stage would have used next (spec §5: "the schedule
// continues from the current learning rate"), saying so; a new --lr makes the plan again, also
// said. Before, stage 2 rebuilt the plan from its own flags: the rate jumped at the boundary.
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import { learningRate, planForStages, type LrPlan } from '../../src/train/lr-schedule.js';
import { CHECKPOINTS_DIR, runStage, type StageOptions } from '../../src/train/stage.js';
import { stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir: run, cleanup } = tempRun('lr-plan');
afterAll(cleanup);

const stageLrs = async (stage: number) => (await stageMetrics(run, stage)).filter((l) => l.lr !== undefined).map((l) => l.lr!);

it('stage 2 with other steps and no --lr continues stage 1\'s rate; a new --lr makes the plan again', async () => {
  const train = await storyChunks(32);
  const common = { model: STORIES, modelDir: STORIES, run, method: 'vanilla', train, batchSize: 2, backend: 'wasm' } as const;
  await runStage({ ...common, stage: 1, totalStages: 3, steps: 4, lr: 2e-3 } as StageOptions);
  expect(await stageLrs(1)).toEqual([0, 1, 2, 3].map((s) => learningRate(s, planForStages(2e-3, [4, 4, 4]))));

  const warnings: string[] = [];
  await runStage({ ...common, stage: 2, steps: 2, onWarning: (m) => warnings.push(m) } as StageOptions);
  // By hand: stage 1's segment (n = 12, no warm-up) at j = 4 is 2e-3 · ½(1 + cos(π/3)) = 1.5e-3; stage 2 then
  // runs a cosine over the 4 steps left (stages 2 and 3 of 2 each): 1.5e-3, 1.5e-3 · ½(1 + cos(π/4)).
  const lrs = await stageLrs(2);
  expect(lrs[0]).toBeCloseTo(1.5e-3, 15);
  expect(lrs[1]).toBeCloseTo(1.5e-3 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
  expect(warnings).toContain('stage 2 trains 2 steps, where stage 1 planned 4: the learning rate continues from the 1.500e-3 stage 1 would have used next, over the 4 steps now left in the run');
  const details = (JSON.parse(await readFile(join(run, 'stages/2/apex_run.json'), 'utf8')) as { details: { optimizer: { lr: number }; total_stages: number } }).details;
  expect(details.optimizer.lr).toBe(2e-3);
  expect(details.total_stages).toBe(3);

  const renewed: string[] = [];
  await runStage({ ...common, stage: 2, steps: 2, lr: 1e-3, force: true, onWarning: (m) => renewed.push(m) } as StageOptions);
  expect(renewed).toContain('--lr 0.001 differs from the 0.002 stage 1 was planned with; the learning-rate plan is made again with 0.001 from here on');
  expect(await stageLrs(2)).toEqual([4, 5].map((s) => learningRate(s, planForStages(1e-3, [4, 2, 2]))));
  expect(renewed.filter((m) => /tokens per step/.test(m))).toEqual([]);

  // Another batch size (the command's default, say) is said too.
  const batch: string[] = [];
  await runStage({ ...common, stage: 2, steps: 2, batchSize: 4, force: true, onWarning: (m) => batch.push(m) } as StageOptions);
  expect(batch).toContain('stage 2 trains 128 tokens per step (batch 4 × accumulation 1 × 32), stage 1 trained 64');
});

// A checkpoint written by the apex before segmentTotals (which rebuilt the plan of a stage of
// other length from its own steps) resumes on that plan, saying so, rather than being refused
// or silently switched to today's plan halfway through the stage.
it('a checkpoint made with the plan an earlier apex rebuilt resumes on that plan, with a warning', async () => {
  const { dir: legacyRun, cleanup: done } = tempRun('lr-legacy');
  try {
    const train = await storyChunks(32);
    const common = { model: STORIES, modelDir: STORIES, run: legacyRun, method: 'vanilla', train, batchSize: 2, backend: 'cpu', lr: 2e-3 } as const;
    await runStage({ ...common, stage: 1, totalStages: 3, steps: 4 } as StageOptions);
    const abort = new AbortController();
    const stage2 = { ...common, stage: 2, steps: 6, saveEvery: 2, expand: false } as const;
    let calls = 0;
    await expect(runStage({ ...stage2, signal: abort.signal, onStep: () => { if (++calls === 2) abort.abort(); } } as StageOptions)).rejects.toBeInstanceOf(InterruptedError);

    // Today's plan continues stage 1's rate; the earlier apex's plan started over from [4, 6, 6].
    const legacy = planForStages(2e-3, [4, 6, 6]);
    const checkpoints = join(legacyRun, 'stages/2', CHECKPOINTS_DIR);
    const name = (await readdir(checkpoints)).sort().at(-1);
    const stateFile = join(checkpoints, name!, 'state.json');
    const state = JSON.parse(await readFile(stateFile, 'utf8')) as { scalars: { lrPlan: unknown }; scalarsSha256?: string };
    const today = state.scalars.lrPlan as LrPlan;
    expect([6, 7, 8, 9].some((s) => learningRate(s, today) !== learningRate(s, legacy))).toBe(true);
    state.scalars.lrPlan = legacy;
    state.scalarsSha256 = createHash('sha256').update(JSON.stringify(state.scalars)).digest('hex');
    await writeFile(stateFile, JSON.stringify(state));

    const warnings: string[] = [];
    await runStage({ ...stage2, resume: true, onWarning: (m) => warnings.push(m) } as StageOptions);
    expect(warnings.some((m) => /made by an earlier apex.*the stage ends on that plan/.test(m))).toBe(true);
    const lines = (await stageMetrics(legacyRun, 2)).filter((l) => l.lr !== undefined);
    expect(lines.slice(-4).map((l) => l.lr)).toEqual([6, 7, 8, 9].map((s) => learningRate(s, legacy)));
  } finally {
    done();
  }
});
