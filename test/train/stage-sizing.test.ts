// The memory sizing of a stage (made before its scores are read) has the sizes of the real
// selection, also under decaying K in `structured`, where the units earlier stages used as N
// stay directly tuned and can make E larger than the tuned total.
import { afterAll, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { resolveStageSettings } from '../../src/train/stage-options.js';
import { selectStageUnits, sizingSelections, stageScoresPath } from '../../src/train/stage-selection.js';
import { STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir: run, cleanup } = tempRun('sizing');
afterAll(cleanup);

it('sizing selections have the real selection sizes, decaying K with retained earlier N included', async () => {
  // stories260K: 4 KV groups, 172 channels; ratio 0.5 and attention tuned 0.5 make E at stage 2
  // hold only the retained earlier N units, beyond the tuned total.
  const base: StageOptions = {
    model: STORIES, modelDir: STORIES, run, stage: 1, method: 'apex', setting: 'structured', decayK: true, ratio: 0.5,
    tunedAttnRatio: 0.5, tunedFfnRatio: 0.3, train: await storyChunks(32), steps: 1, batchSize: 4, backend: 'wasm', expand: true,
  };
  await runStage(base);
  const checkpoint = await Checkpoint.open(STORIES);
  const { spec } = describeCheckpoint(checkpoint);
  await checkpoint.close();
  const settings = resolveStageSettings({ ...base, stage: 2, totalStages: 2 });
  const sizing = await sizingSelections(settings, spec);
  const real = await selectStageUnits(settings, spec, stageScoresPath(run, 2));
  const sizes = (sel: typeof real) => sel.map((l) => [l.heads.P.length, l.heads.N.length, l.heads.E.length, l.channels.P.length, l.channels.N.length, l.channels.E.length]);
  expect(sizes(sizing)).toEqual(sizes(real));
  // The retained units push E past the tuned total somewhere (the case the sizing once missed).
  expect(real.some((l) => l.heads.P.length + l.heads.N.length + l.heads.E.length > Math.max(2 * l.headK, Math.floor(spec.numKvHeads * 0.5)))).toBe(true);
});
