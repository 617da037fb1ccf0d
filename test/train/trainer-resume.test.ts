// Resume is exact: N steps straight equal N/2 steps, an interruption, and a resumed N/2 — same losses step by step, same trained tensors and the same recorded scores —
// and the resumed run starts at step N/2 (its step counter, its callbacks and metrics.jsonl
// say so). Two interruptions: Ctrl-C (abort signal: a checkpoint is saved on the way out) and
// a crash after a step whose checkpoint was never written (metrics.jsonl is cut back).
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions, type StageResult } from '../../src/train/stage.js';
import type { StepReport } from '../../src/train/trainer.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const N = 4;
const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;
let held: SequenceSet;

function newRun(): string {
  const { dir, cleanup } = tempRun('resume');
  cleanups.push(cleanup);
  return dir;
}

beforeAll(async () => {
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 12));
  held = idSet(chunks.slice(12, 14));
});

async function expectSameAsStraight(straight: string, run: string, files: string[]): Promise<void> {
  const a = await stageMetrics(straight);
  const b = await stageMetrics(run);
  expect(b.map((l) => l.step)).toEqual([0, 1, 2, 3, 4]);
  expect(b.map((l) => [l.loss, l.lr, l.grad_norm, l.eval_loss])).toEqual(a.map((l) => [l.loss, l.lr, l.grad_norm, l.eval_loss]));
  for (const file of files) expect(await stageFileMaxAbsDiff(straight, run, file), file).toBeLessThanOrEqual(1e-6);
}

// Both on the cpu backend: LoRA (adapters merged at the end) and APEX structured (operators,
// masked direct updates, recorder counts in the checkpoint).
const scenarios = [
  { name: 'cpu, LoRA', options: { backend: 'cpu', method: 'lora', loraRank: 2 }, files: ['trained.safetensors'], interrupt: 'abort' },
  { name: 'cpu, APEX structured', options: { backend: 'cpu', method: 'apex', setting: 'structured' }, files: ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'], interrupt: 'crash' },
] as const;

for (const sc of scenarios) {
  describe(`resume (${sc.name}, ${N} steps of 2 micro-batches)`, () => {
    const options = (run: string, extra: Partial<StageOptions>): StageOptions => ({
      model: STORIES, modelDir: STORIES, run, stage: 1, train: data, eval: held, steps: N, batchSize: 2, gradAccum: 2, lr: 1e-2,
      saveEvery: 2, evalEvery: 2, expand: false, ...(sc.options as Partial<StageOptions>), ...extra,
    });
    let straight: { run: string; result: StageResult; steps: StepReport[] };

    it('the straight run logs every step once', async () => {
      const run = newRun();
      const steps: StepReport[] = [];
      const result = await runStage(options(run, { onStep: (r) => steps.push(r) }));
      straight = { run, result, steps };
      expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
      expect(result.startStep).toBe(0);
      expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2, 3, 4]);
    });

    if (sc.interrupt === 'abort') {
      it('Ctrl-C after N/2 steps saves a checkpoint; --resume continues at N/2 and ends where the straight run ended', async () => {
        const run = newRun();
        const abort = new AbortController();
        const first: number[] = [];
        await expect(runStage(options(run, { signal: abort.signal, onStep: (r) => { first.push(r.step); if (r.step === N / 2) abort.abort(); } }))).rejects.toBeInstanceOf(InterruptedError);
        expect(first).toEqual([1, 2]);
        expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2]);
        // Other data (fewer sequences, or the same ones reordered) or another seed: refused, the checkpoint untouched.
        for (const [label, extra, message] of [
          ['fewer sequences', { train: idSet(data.sequences.slice(0, 6)) }, /made on other training data \(6 sequences now/],
          ['reordered', { train: idSet([...data.sequences].reverse()) }, /made on other training data/],
          ['another seed', { seed: 7 }, /another data-order seed/],
          // Settings the learning-rate plan does not show: each named with its old and new value.
          ['another LoRA alpha', { loraAlpha: 8 }, /other settings: LoRA alpha 4 then, 8 now\./],
          ['the same tokens per step in another split', { batchSize: 4, gradAccum: 1 }, /batch size 2 then, 4 now; gradient accumulation 2 then, 1 now/],
          ['other AdamW settings', { beta1: 0.5, weightDecay: 0.1, gradClip: 0.5 }, /AdamW beta1 0.9 then, 0.5 now; weight decay 0 then, 0.1 now; gradient clipping 1 then, 0.5 now/],
          ['the same ids with other real lengths', { train: { ...data, lengths: data.sequences.map((q) => q.length - 1) } }, /other settings: training sequence lengths null then, "sha256:\w+" now\./],
          ['another held-out set', { eval: idSet(held.sequences.slice(0, 1)) }, /held-out data "sha256:[0-9a-f]{16}" then, "sha256:[0-9a-f]{16}" now/],
          ['another input model', { modelDir: 'fixtures/llama-mha-f32', model: 'fixtures/llama-mha-f32' }, /input model "sha256:\w+" then, "sha256:\w+" now/],
        ] as const) {
          const refused = await runStage(options(run, { resume: true, ...extra })).catch((e: unknown) => e);
          expect((refused as { code?: string }).code, label).toBe('CHECKPOINT_MISMATCH');
          expect((refused as { exit?: number }).exit, label).toBe(2); // options that contradict the checkpoint, whichever
          expect((refused as Error).message, label).toMatch(message);
        }
        const second: number[] = [];
        const resumed = await runStage(options(run, { resume: true, onStep: (r) => second.push(r.step) }));
        expect(resumed.startStep).toBe(N / 2);
        expect(second).toEqual([3, 4]);
        await expectSameAsStraight(straight.run, run, [...sc.files]);
      });
    } else {
      it('a crash after step 3 (checkpoint at 2) resumes at 2, cutting the logged step 3', async () => {
        const run = newRun();
        cpSync(join(straight.run, 'analysis'), join(run, 'analysis'), { recursive: true });
        await expect(runStage(options(run, { onStep: (r) => { if (r.step === 3) throw new Error('simulated crash'); } }))).rejects.toThrow('simulated crash');
        expect((await stageMetrics(run)).map((l) => l.step)).toEqual([0, 1, 2, 3]);
        await expect(runStage(options(run, {}))).rejects.toThrow(/--resume/);
        // Other units (reversed selection) or another counting k (decaying K): refused by name.
        for (const [extra, message] of [
          [{ reverse: true }, /other settings: selected units \(P, N, E of every layer, from the selection settings and the scores\) "sha256:\w+" then, "sha256:\w+" now \(unchanged options give other units under an apex that selects differently[^)]*: then --force trains the stage again\)\./],
          [{ decayK: true }, /other settings: score recorder k "sha256:\w+" then, "sha256:\w+" now\./],
        ] as const) {
          const refused = await runStage(options(run, { resume: true, ...extra })).catch((e: unknown) => e);
          expect((refused as { code?: string }).code).toBe('CHECKPOINT_MISMATCH');
          expect((refused as Error).message).toMatch(message);
        }
        const second: number[] = [];
        const resumed = await runStage(options(run, { resume: true, onStep: (r) => second.push(r.step) }));
        expect(resumed.startStep).toBe(2);
        expect(second).toEqual([3, 4]);
        await expectSameAsStraight(straight.run, run, [...sc.files]);
      });
    }
  });
}
