// Ctrl-C during a held-out evaluation after step s (--eval-every, or the last step's): step s is
// kept (its metrics line without eval fields, a checkpoint at s recording the evaluation as
// owed), and --resume runs that evaluation first, logs it as an eval-only line of step s, and
// trains on: the same training losses, held-out losses and weights as a run never interrupted.
// Stopped again while it runs, nothing new is saved. A checkpoint without the record owes nothing.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { appendMetrics, truncateMetrics } from '../../src/train/metrics-log.js';
import { runStage, type StageOptions, type StageResult } from '../../src/train/stage.js';
import { listCheckpoints, loadTrainState } from '../../src/train/train-state.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const N = 4;
const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;
let held: SequenceSet;
let straight: { run: string; result: StageResult };

function newRun(): string {
  const { dir, cleanup } = tempRun('eval-interrupt');
  cleanups.push(cleanup);
  return dir;
}

// LoRA on cpu; no periodic checkpoints, so a checkpoint at an evaluated step can only come from
// the interrupt. Three held-out sequences in batches of 2: the evaluation has two batches.
const options = (run: string, extra: Partial<StageOptions> = {}): StageOptions => ({
  model: STORIES, modelDir: STORIES, run, stage: 1, train: data, eval: held, steps: N, batchSize: 2, gradAccum: 2, lr: 1e-2,
  saveEvery: 0, evalEvery: 2, expand: false, backend: 'cpu', method: 'lora', loraRank: 2, ...extra,
});

/**
 * Options whose progress callback aborts the signal, as a SIGINT handler would (a macrotask),
 * once the held-out evaluation at `step` has begun; `said` collects the progress messages.
 */
function abortingDuringEvalAt(step: number, said: string[] = []): Partial<StageOptions> {
  const abort = new AbortController();
  const announced = new RegExp(`^stage 1: held-out evaluation at step ${step} \\(`);
  return {
    signal: abort.signal,
    progress: (m) => {
      said.push(m);
      if (announced.test(m)) setImmediate(() => abort.abort(new InterruptedError('interrupted by SIGINT')));
    },
  };
}

const checkpointsDir = (run: string) => join(run, 'stages/1/checkpoints');

async function latestScalars(run: string) {
  const all = await listCheckpoints(checkpointsDir(run));
  return { steps: all.map((c) => c.step), scalars: (await loadTrainState(all.at(-1)!.path)).scalars };
}

/** The training lines (those with a loss) of a stage's metrics, as the numbers that must match. */
async function trainingNumbers(run: string) {
  return (await stageMetrics(run)).filter((l) => l.loss !== undefined).map((l) => [l.step, l.tokens, l.loss, l.lr, l.grad_norm]);
}

async function expectSameTrainingAsStraight(run: string): Promise<void> {
  expect(await trainingNumbers(run)).toEqual(await trainingNumbers(straight.run));
  expect(await stageFileMaxAbsDiff(straight.run, run, 'trained.safetensors')).toBe(0);
}

/** The held-out losses by step (each step once: the eval line of a step, whichever line it is on). */
async function evalLosses(run: string): Promise<Map<number, number>> {
  return new Map((await stageMetrics(run)).filter((l) => l.eval_loss !== undefined).map((l) => [l.step, l.eval_loss!]));
}

async function expectSameEvalsAsStraight(run: string): Promise<void> {
  const want = await evalLosses(straight.run);
  const got = await evalLosses(run);
  expect([...got.keys()]).toEqual([...want.keys()]);
  for (const [step, loss] of want) expect(Math.abs(got.get(step)! - loss), `eval_loss at step ${step}`).toBeLessThanOrEqual(1e-6);
}

beforeAll(async () => {
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 12));
  held = idSet(chunks.slice(12, 15));
  const run = newRun();
  straight = { run, result: await runStage(options(run)) };
  expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2, 3, 4]);
});

describe('Ctrl-C during a held-out evaluation after a step', () => {
  it('keeps the step, owes its evaluation in the checkpoint; a stopped resume saves nothing; --resume evaluates first, then trains as the straight run', async () => {
    const run = newRun();
    const first: number[] = [];
    const error = await runStage(options(run, { ...abortingDuringEvalAt(2), onStep: (r) => first.push(r.step) })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InterruptedError);
    expect((error as Error).message).toMatch(/^interrupted during the held-out evaluation at step 2 of stage 1; saved a checkpoint, continue with --resume, which runs the held-out evaluation at step 2 first$/);
    // Step 2's update is complete and logged, without the evaluation that was stopped.
    expect(first).toEqual([1]);
    const logged = await stageMetrics(run);
    expect(logged.map((l) => l.step)).toEqual([0, 1, 2]);
    expect(logged[2]!.loss).toBe((await stageMetrics(straight.run))[2]!.loss);
    expect(logged[2]).not.toHaveProperty('eval_loss');
    expect(logged[2]).not.toHaveProperty('eval_ppl');
    const saved = await latestScalars(run);
    expect(saved.steps).toEqual([2]);
    expect(saved.scalars).toMatchObject({ step: 2, pendingEval: true });
    const stateFile = join(checkpointsDir(run), 'step-00000002', 'state.json');
    const stateBefore = readFileSync(stateFile, 'utf8');

    // The owed evaluation stopped again: nothing new saved, nothing logged, exit 130 again.
    const again = await runStage(options(run, { resume: true, ...abortingDuringEvalAt(2) })).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(InterruptedError);
    expect((again as Error).message).toMatch(/^interrupted during the held-out evaluation at step 2 of stage 1; the checkpoint at step 2 still owes it, continue with --resume, which runs the held-out evaluation at step 2 first$/);
    expect((await listCheckpoints(checkpointsDir(run))).map((c) => c.step)).toEqual([2]);
    expect(readFileSync(stateFile, 'utf8')).toBe(stateBefore);
    expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2]);

    const said: string[] = [];
    const second: number[] = [];
    const resumed = await runStage(options(run, { resume: true, progress: (m) => said.push(m), onStep: (r) => second.push(r.step) }));
    expect(resumed.startStep).toBe(2);
    expect(second).toEqual([3, 4]);
    // The owed evaluation before the first step of the resumed run.
    const evalAt = said.findIndex((m) => /^stage 1: held-out evaluation at step 2 \(3 sequences\)$/.test(m));
    expect(evalAt).toBeGreaterThanOrEqual(0);
    expect(said.findIndex((m) => /^stage 1 step 3\//.test(m))).toBeGreaterThan(evalAt);
    const lines = await stageMetrics(run);
    expect(lines.map((l) => l.step)).toEqual([0, 1, 2, 2, 3, 4]);
    expect(Object.keys(lines[3]!).sort()).toEqual(['elapsed', 'eval_loss', 'eval_ppl', 'step', 'tokens']);
    expect(lines[3]!.tokens).toBe(lines[2]!.tokens);
    await expectSameEvalsAsStraight(run);
    await expectSameTrainingAsStraight(run);
    expect(resumed.finalLoss).toBe(straight.result.finalLoss);
    expect(Math.abs(resumed.eval!.loss - straight.result.eval!.loss)).toBeLessThanOrEqual(1e-6);
    // Checkpoints that owe nothing carry no record of it.
    expect('pendingEval' in (await latestScalars(run)).scalars).toBe(false);
  });

  it('at the last step: --resume runs the owed evaluation and finishes the stage with it', async () => {
    const run = newRun();
    const error = await runStage(options(run, abortingDuringEvalAt(N))).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InterruptedError);
    expect((error as Error).message).toMatch(new RegExp(`held-out evaluation at step ${N} of stage 1; saved a checkpoint, continue with --resume, which runs the held-out evaluation at step ${N} first`));
    expect(existsSync(join(run, 'stages/1/apex_run.json'))).toBe(false);
    expect((await latestScalars(run)).scalars).toMatchObject({ step: N, pendingEval: true });
    expect((await stageMetrics(run)).at(-1)).not.toHaveProperty('eval_loss');

    const resumed = await runStage(options(run, { resume: true }));
    expect([resumed.status, resumed.startStep, resumed.steps]).toEqual(['trained', N, N]);
    expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2, 3, N, N]);
    await expectSameEvalsAsStraight(run);
    await expectSameTrainingAsStraight(run);
    // The stage's record carries the last step's training loss and the owed evaluation.
    const results = (dir: string) => (JSON.parse(readFileSync(join(dir, 'stages/1/apex_run.json'), 'utf8')) as { details: { results: Record<string, number | null> } }).details.results;
    const [want, got] = [results(straight.run), results(run)];
    expect(got.final_loss).toBe(want.final_loss);
    expect(Math.abs(got.eval_loss! - want.eval_loss!)).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(got.eval_ppl! - want.eval_ppl!)).toBeLessThanOrEqual(1e-5);
    expect(resumed.finalLoss).toBe(straight.result.finalLoss);
    expect(Math.abs(resumed.eval!.loss - straight.result.eval!.loss)).toBeLessThanOrEqual(1e-6);
  });

  it('a checkpoint without the record (as older versions wrote) owes no evaluation: --resume trains on from its step', async () => {
    const run = newRun();
    await expect(runStage(options(run, abortingDuringEvalAt(2)))).rejects.toBeInstanceOf(InterruptedError);
    // Remove the record, keeping the checkpoint's scalars digest valid.
    const stateFile = join(checkpointsDir(run), 'step-00000002', 'state.json');
    const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { scalars: Record<string, unknown>; scalarsSha256: string };
    expect(state.scalars.pendingEval).toBe(true);
    delete state.scalars.pendingEval;
    state.scalarsSha256 = createHash('sha256').update(JSON.stringify(state.scalars)).digest('hex');
    writeFileSync(stateFile, JSON.stringify(state));

    const said: string[] = [];
    const resumed = await runStage(options(run, { resume: true, progress: (m) => said.push(m) }));
    expect(resumed.startStep).toBe(2);
    expect(said.filter((m) => /held-out evaluation at step 2/.test(m))).toEqual([]);
    const lines = await stageMetrics(run);
    expect(lines.map((l) => l.step)).toEqual([0, 1, 2, 3, 4]);
    expect(lines[2]).not.toHaveProperty('eval_loss');
    await expectSameTrainingAsStraight(run);
  });
});

describe('truncateMetrics with an owed evaluation', () => {
  it('keeps the training line of the step, drops an eval-only line of it logged by a resumed run that died before its next checkpoint', async () => {
    const path = join(newRun(), 'metrics.jsonl');
    const lines = [
      { step: 0, tokens: 0, eval_loss: 3, eval_ppl: 20, elapsed: 0 },
      { step: 1, tokens: 64, loss: 2.5, elapsed: 1 },
      { step: 2, tokens: 128, loss: 2.4, elapsed: 2 },
      { step: 2, tokens: 128, eval_loss: 2.9, eval_ppl: 18, elapsed: 3 },
      { step: 3, tokens: 192, loss: 2.3, elapsed: 4 },
    ];
    for (const l of lines) await appendMetrics(path, l);
    expect(await truncateMetrics(path, 2, true)).toEqual(lines.slice(0, 3));
    // The evaluation was run (the checkpoint owes nothing): its line stays.
    for (const l of lines.slice(3)) await appendMetrics(path, l);
    expect(await truncateMetrics(path, 2)).toEqual(lines.slice(0, 4));
  });
});
