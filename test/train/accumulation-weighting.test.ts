// Gradient accumulation weights micro-batches by their prediction targets: with chat data
// (loss masks of unequal size) batch 1 × 2 micro-batches equals one batch of 2 — the same
// loss, gradient norm and trained weights — as Hugging Face's Trainer does since 4.46. A mean
// of the two micro-batch means would weight the 3-target sequence's tokens 4× more.
import { afterAll, expect, it } from 'vitest';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

function maskWithTargets(length: number, targets: number): Uint8Array {
  const m = new Uint8Array(length);
  for (let t = length - targets; t < length; t++) m[t] = 1;
  return m;
}

it('batch 1 × 2 accumulated equals batch 2 × 1 on chat-like data with 3 and 12 targets', async () => {
  const chunks = (await storyChunks(16)).sequences.slice(0, 2);
  const chat: SequenceSet = { ...idSet(chunks), lossMasks: [maskWithTargets(16, 3), maskWithTargets(16, 12)] };
  const run = async (batchSize: number, gradAccum: number) => {
    const t = tempRun('accum');
    cleanups.push(t.cleanup);
    const options: StageOptions = { model: STORIES, modelDir: STORIES, run: t.dir, stage: 1, method: 'vanilla', train: chat, steps: 2, batchSize, gradAccum, lr: 1e-3, backend: 'cpu', expand: false };
    await runStage(options);
    return t.dir;
  };
  const whole = await run(2, 1);
  const accumulated = await run(1, 2);
  const a = (await stageMetrics(whole)).filter((l) => l.loss !== undefined);
  const b = (await stageMetrics(accumulated)).filter((l) => l.loss !== undefined);
  expect(b).toHaveLength(2);
  b.forEach((line, i) => {
    expect(Math.abs(line.loss! - a[i]!.loss!)).toBeLessThan(1e-5);
    expect(Math.abs(line.grad_norm! - a[i]!.grad_norm!) / a[i]!.grad_norm!).toBeLessThan(1e-5);
  });
  // Adam divides by sqrt(v): rounding-level gradient differences on near-zero entries move them by
  // up to a fraction of lr (1e-3) per step, so the weights agree to a few 1e-5, not to 1e-7.
  expect(await stageFileMaxAbsDiff(whole, accumulated, 'trained.safetensors')).toBeLessThan(5e-5);
});
