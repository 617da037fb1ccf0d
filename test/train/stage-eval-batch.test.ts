// The held-out evaluations during training run at their own batch size (--eval-batch-size,
// apex run's eval.batch_size; default: the training batch). It changes how many forward passes
// an evaluation makes, not its result: the same held-out losses (to float rounding), the same
// training losses and weights, and the stage records the batch it evaluated with.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import type { SequenceSet } from '../../src/train/data.js';
import { planForStages } from '../../src/train/lr-schedule.js';
import { readMetrics } from '../../src/train/metrics-log.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { buildStageTrainables } from '../../src/train/stage-trainables.js';
import { train } from '../../src/train/trainer.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
function newRun(): string {
  const { dir, cleanup } = tempRun('eval-batch');
  cleanups.push(cleanup);
  return dir;
}

let data: SequenceSet;
/** Five held-out sequences: batches of 1 make five forward passes, of 3 two, of the training batch 2 three. */
let held: SequenceSet;

beforeAll(async () => {
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 10));
  held = idSet(chunks.slice(10, 15));
  expect(held.sequences).toHaveLength(5);
});

describe('a stage with its own held-out evaluation batch', () => {
  // LoRA on cpu, training batch 2, an evaluation after every step (and before the first).
  const options = (run: string, extra: Partial<StageOptions> = {}): StageOptions => ({
    model: STORIES, modelDir: STORIES, run, stage: 1, train: data, eval: held, steps: 3, batchSize: 2, lr: 1e-2,
    saveEvery: 0, evalEvery: 1, expand: false, backend: 'cpu', method: 'lora', loraRank: 2, ...extra,
  });
  const record = (run: string) => (JSON.parse(readFileSync(join(run, 'stages/1/apex_run.json'), 'utf8')) as { details: { eval?: unknown; optimizer: { batchSize: number } } }).details;
  const evalLosses = async (run: string) => (await stageMetrics(run)).filter((l) => l.eval_loss !== undefined).map((l) => [l.step, l.eval_loss!] as const);
  const trainingNumbers = async (run: string) => (await stageMetrics(run)).filter((l) => l.loss !== undefined).map((l) => [l.step, l.tokens, l.loss, l.lr, l.grad_norm]);

  it('batch 1 and batch 3 give the same held-out losses (1e-6), the same training and weights; the record says which batch evaluated', async () => {
    const one = newRun();
    const three = newRun();
    await runStage(options(one, { evalBatchSize: 1 }));
    await runStage(options(three, { evalBatchSize: 3 }));
    const [a, b] = [await evalLosses(one), await evalLosses(three)];
    expect(a.map(([step]) => step)).toEqual([0, 1, 2, 3]);
    expect(b.map(([step]) => step)).toEqual([0, 1, 2, 3]);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]![1] - b[i]![1]), `eval_loss at step ${a[i]![0]}`).toBeLessThanOrEqual(1e-6);
    expect(await trainingNumbers(three)).toEqual(await trainingNumbers(one));
    expect(await stageFileMaxAbsDiff(one, three, 'trained.safetensors')).toBe(0);
    // Provenance: how the evaluations ran; the training batch is unchanged.
    expect(record(one).eval).toEqual({ every: 1, batch_size: 1 });
    expect(record(three).eval).toEqual({ every: 1, batch_size: 3 });
    expect(record(three).optimizer.batchSize).toBe(2);
  });

  it('defaults to the training batch, and is not part of what --resume must match', async () => {
    const run = newRun();
    // Interrupted after step 2's checkpoint with evaluation batch 1, resumed with batch 3: no CHECKPOINT_MISMATCH.
    const abort = new AbortController();
    await expect(runStage(options(run, { evalBatchSize: 1, saveEvery: 2, onStep: (r) => { if (r.step === 2) abort.abort(); }, signal: abort.signal }))).rejects.toThrow(/interrupted/);
    const resumed = await runStage(options(run, { resume: true, evalBatchSize: 3 }));
    expect([resumed.startStep, resumed.steps]).toEqual([2, 3]);
    expect(record(run).eval).toEqual({ every: 1, batch_size: 3 });
    // A complete stage resumed with yet another evaluation batch is reused, not refused.
    expect((await runStage(options(run, { resume: true, evalBatchSize: 5 }))).status).toBe('complete');

    const plain = newRun();
    await runStage(options(plain));
    expect(record(plain).eval).toEqual({ every: 1, batch_size: 2 });
  });
});

describe('the trainer evaluates in batches of evalBatchSize', () => {
  /**
   * Forward passes of one stage of 1 step (one micro-batch) evaluated before and after it: the
   * hooks are asked for layer 0 once per forward pass (prepareTransforms off: no shared transforms).
   */
  async function forwardPasses(evalBatchSize: number | undefined): Promise<{ forwards: number; evalLosses: number[] }> {
    await selectBackend('cpu');
    const dir = newRun();
    const checkpoint = await Checkpoint.open(STORIES);
    try {
      const { spec } = describeCheckpoint(checkpoint);
      const t = await buildStageTrainables(checkpoint, spec, { setting: 'lora', lora: { rank: 2, seed: 1 } });
      let forwards = 0;
      const hooks = (layer: number) => {
        if (layer === 0) forwards++;
        return t.hooks!(layer);
      };
      try {
        await train({
          model: t.model, params: t.params, hooks, train: data, eval: held, stage: 1, steps: 1, lrPlan: planForStages(1e-2, [1]), globalStepOffset: 0,
          batchSize: 2, gradAccum: 1, ...(evalBatchSize !== undefined ? { evalBatchSize } : {}), prepareTransforms: false, gradClip: 1, adamw: {}, evalEvery: 0, saveEvery: 0, keepCheckpoints: 1,
          checkpointsDir: join(dir, 'checkpoints'), metricsPath: join(dir, 'metrics.jsonl'), dataSeed: 1,
        });
      } finally {
        t.dispose();
      }
      const evalLosses = (await readMetrics(join(dir, 'metrics.jsonl'))).filter((l) => l.eval_loss !== undefined).map((l) => l.eval_loss!);
      return { forwards, evalLosses };
    } finally {
      await checkpoint.close();
    }
  }

  it('two evaluations of 5 sequences and 1 training step: 2 · ⌈5 / batch⌉ + 1 forward passes', async () => {
    const byBatch = new Map<number | undefined, { forwards: number; evalLosses: number[] }>();
    for (const b of [undefined, 1, 3, 8]) byBatch.set(b, await forwardPasses(b));
    // Default: the training batch 2 (three batches per evaluation).
    expect(byBatch.get(undefined)!.forwards).toBe(2 * 3 + 1);
    expect(byBatch.get(1)!.forwards).toBe(2 * 5 + 1);
    expect(byBatch.get(3)!.forwards).toBe(2 * 2 + 1);
    // More than the held-out sequences: one batch of all of them.
    expect(byBatch.get(8)!.forwards).toBe(2 * 1 + 1);
    const reference = byBatch.get(undefined)!.evalLosses;
    expect(reference).toHaveLength(2);
    for (const [b, r] of byBatch) {
      expect(r.evalLosses).toHaveLength(2);
      r.evalLosses.forEach((loss, i) => expect(Math.abs(loss - reference[i]!), `batch ${b}, evaluation ${i}`).toBeLessThanOrEqual(1e-6));
    }
  });

  it('refuses an evaluation batch that is not a positive integer', async () => {
    await expect(forwardPasses(0)).rejects.toThrow(/evalBatchSize must be an integer >= 1, got 0/);
  });
});
