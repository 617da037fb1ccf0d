// A stage refuses to train when its filesystem has no room for one checkpoint (exit 5,
// DISK_FULL naming the checkpoints folder and the bytes needed vs free), before the first
// evaluation and step: every stage saves a checkpoint after its last step, so training on would
// lose all the work at the end. The free space is injected into node:fs/promises' statfs (no
// mount, no root).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { toApexError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage } from '../../src/train/stage.js';
import { checkTrainStateSpace, trainStateBytes } from '../../src/train/train-state.js';
import { idSet, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

/** Free bytes reported by statfs for paths under `under`. */
const inject = vi.hoisted(() => ({ under: undefined as string | undefined, free: 0 }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const mocked = {
    ...real,
    statfs: async (path: Parameters<typeof real.statfs>[0]) => {
      const s = await real.statfs(path);
      if (inject.under === undefined || !String(path).startsWith(inject.under)) return s;
      return { ...s, bsize: 4096, bavail: Math.floor(inject.free / 4096), bfree: Math.floor(inject.free / 4096) };
    },
  };
  return { ...mocked, default: mocked };
});

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;
beforeAll(async () => {
  data = idSet((await storyChunks(8)).sequences);
});

const SCALARS = { stage: 1, step: 0, globalStep: 0, tokens: 0, data: { epoch: 0, index: 0, shuffleSeed: 1 }, rng: [1, 2, 3, 4], lrPlan: { peakLr: 1e-3, totalSteps: 10, stageStarts: [0] } };

describe('free space for a checkpoint', () => {
  it('trainStateBytes counts three float32 copies of every trainable tensor and state.json', () => {
    const bytes = trainStateBytes(new Map([['w', { shape: [1000, 100] }], ['b', { shape: [100] }]]), SCALARS);
    expect(bytes).toBeGreaterThan(3 * 4 * 100_100);
    expect(bytes).toBeLessThan(3 * 4 * 100_100 + 128 * 1024);
  });

  it('checkTrainStateSpace: DISK_FULL naming the folder with needed and free bytes; fine with room', async () => {
    const e = toApexError(await checkTrainStateSpace('/nonexistent/run/stages/1/checkpoints', 16e6, async () => 4e6).then(() => undefined, (err: unknown) => err));
    expect(e).toMatchObject({ code: 'DISK_FULL', exit: 5 });
    expect(e.message).toContain('/nonexistent/run/stages/1/checkpoints');
    expect(e.message).toMatch(/needs 16(\.0+)? MB/);
    expect(e.message).toMatch(/4(\.0+)? MB free/);
    await checkTrainStateSpace('/nonexistent/run/stages/1/checkpoints', 16e6, async () => 17e6);
  });

  it('a stage with room for its files but not a checkpoint: refused before the first step, exit 5', async () => {
    const { dir, cleanup } = tempRun('checkpoint-space');
    cleanups.push(cleanup);
    inject.under = dir;
    inject.free = 4096; // a block: room for metrics.jsonl, not for a checkpoint
    const steps: number[] = [];
    try {
      const r = await runStage({
        model: STORIES, modelDir: STORIES, run: dir, stage: 1, method: 'vanilla', backend: 'cpu', train: data, steps: 3, batchSize: 2, lr: 1e-3, saveEvery: 0, expand: false,
        onStep: (s) => { steps.push(s.step); },
      }).then(() => undefined, (err: unknown) => err);
      const e = toApexError(r);
      expect(e).toMatchObject({ code: 'DISK_FULL', exit: 5 });
      expect(e.message).toContain(join(dir, 'stages', '1', 'checkpoints'));
      expect(steps).toEqual([]);
      const checkpoints = join(dir, 'stages', '1', 'checkpoints');
      expect(existsSync(checkpoints) ? readdirSync(checkpoints) : []).toEqual([]);
    } finally {
      inject.under = undefined;
    }
  }, 120_000);
});
