// A resumed stage copies the checkpoint's tensors into its variables and optimizer, and then must
// not keep them: the stage holds the loaded state (its scalars) to the end, and with the tensors
// that was 3 floats per trainable entry on the JavaScript side for the whole resumed stage (126 MB
// on a 10M-parameter model trained whole, 13 GB on the TinyLlama recipe). Measured as the
// ArrayBuffer bytes alive at a step after a forced garbage collection, resumed against fresh.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, llamaCheckpointedStage, storyChunks, tempRun } from './stage-fixtures.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let data: SequenceSet;
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  data = idSet((await storyChunks(16)).sequences.slice(0, 12));
  ({ dir, cleanup } = tempRun('resume-release'));
});
afterAll(() => cleanup());

const options = (run: string, extra: Partial<StageOptions>): StageOptions => llamaCheckpointedStage(run, data, extra);

/**
 * ArrayBuffer bytes alive when step 3 ends, after full collections. V8 frees the memory of dead
 * ArrayBuffers on a background thread after a collection, so under load (the whole suite) one
 * gc() read at once still counted megabytes of dead buffers: collect until the figure settles.
 */
async function atStep3(run: string, extra: Partial<StageOptions>): Promise<number> {
  let bytes = Number.NaN;
  const settled = async () => {
    let last = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 20; i++) {
      gc();
      await new Promise((done) => setTimeout(done, 20));
      const now = process.memoryUsage().arrayBuffers;
      if (now >= last) return now;
      last = now;
    }
    return last;
  };
  // The trainer awaits what onStep returns, so nothing runs while this samples.
  await runStage(options(run, { ...extra, onStep: async (r) => { if (r.step === 3) bytes = await settled(); } }));
  return bytes;
}

it('a resumed stage does not keep the checkpoint\'s tensors once they are restored', async () => {
  // llama-mha-f32: 1,328,256 parameters, all trained: 15.9 MB of parameters and moments in the checkpoint.
  const fresh = await atStep3(join(dir, 'fresh'), {});
  const run = join(dir, 'resumed');
  const abort = new AbortController();
  await expect(runStage(options(run, { signal: abort.signal, onStep: (r) => { if (r.step === 2) abort.abort(); } }))).rejects.toBeInstanceOf(InterruptedError);
  const resumed = await atStep3(run, { resume: true });
  expect(Number.isFinite(fresh) && Number.isFinite(resumed)).toBe(true);
  expect(resumed - fresh).toBeLessThan(4e6);
}, 120_000);
