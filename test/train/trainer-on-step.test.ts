// The trainer awaits a promise returned by onStep before the next step: a caller can pace a
// run or interleave two (bench/train.ts --paired alternates vanilla and APEX steps this way).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage } from '../../src/train/stage.js';
import { idSet, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;

beforeAll(async () => {
  data = idSet((await storyChunks(8)).sequences);
});

describe('onStep', () => {
  it('holds the next step until the promise it returned settles', async () => {
    const { dir, cleanup } = tempRun('on-step');
    cleanups.push(cleanup);
    const events: string[] = [];
    await runStage({
      model: STORIES, modelDir: STORIES, run: dir, stage: 1, method: 'vanilla', backend: 'cpu', train: data, steps: 3, batchSize: 2, lr: 1e-3, saveEvery: 0, expand: false,
      onStep: (r) => {
        events.push(`step ${r.step}`);
        if (r.step !== 1) return;
        // Released well after a step's duration: an unawaited callback would see step 2 first.
        return new Promise<void>((resolve) => setTimeout(() => { events.push('released'); resolve(); }, 1500));
      },
    });
    expect(events).toEqual(['step 1', 'released', 'step 2', 'step 3']);
  });
});
