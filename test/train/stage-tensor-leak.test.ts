// A stage frees every tensor it made: `apex run` trains several stages (and the baseline's) in
// one process, so anything a stage leaves on the tf heap adds up per stage. AdamW's moments were
// such a leak (the zeros each moment variable was made from kept its memory after dispose():
// twice every trainable tensor per stage). Each case runs a whole stage, with a held-out
// evaluation and checkpoints between steps, and counts the engine's tensors and bytes around it.
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterruptedError } from '../../src/errors.js';
import { selectBackend } from '../../src/model/backend.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

let data: SequenceSet;
let held: SequenceSet;
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 10));
  held = idSet(chunks.slice(10, 14));
  ({ dir, cleanup } = tempRun('stage-leak'));
});
afterAll(() => cleanup());

let runs = 0;
const options = (backend: 'cpu' | 'wasm', extra: Partial<StageOptions>): StageOptions => ({
  model: STORIES, modelDir: STORIES, run: join(dir, `run-${++runs}`), stage: 1, train: data, eval: held, steps: 2, batchSize: 2, evalBatchSize: 4, lr: 1e-3,
  saveEvery: 1, evalEvery: 1, expand: false, backend, method: 'vanilla', ...(extra.method === 'apex' ? { calibrationSamples: 6 } : {}), ...extra,
});

/** The engine's tensor count and bytes after `f` minus before. */
async function leftBehind(f: () => Promise<unknown>): Promise<{ tensors: number; bytes: number }> {
  const before = tf.memory();
  await f();
  const after = tf.memory();
  return { tensors: after.numTensors - before.numTensors, bytes: after.numBytes - before.numBytes };
}

const CASES: { name: string; extra: Partial<StageOptions> }[] = [
  { name: 'vanilla', extra: { method: 'vanilla' } },
  { name: 'LoRA', extra: { method: 'lora', loraRank: 2 } },
  { name: 'APEX operators, accumulation 2', extra: { method: 'apex', setting: 'operators', gradAccum: 2 } },
  { name: 'APEX structured', extra: { method: 'apex', setting: 'structured' } },
  { name: 'APEX full, fused at the end', extra: { method: 'apex', setting: 'full', expand: true } },
];

describe.each(['cpu', 'wasm'] as const)('a stage on %s leaves no tensor behind', (backend) => {
  beforeAll(async () => {
    await selectBackend(backend);
    // The first stage of a process also sets up the backend's kernels: not counted.
    await runStage(options(backend, { method: 'vanilla', steps: 1 }));
  });

  it.each(CASES)('$name', async ({ extra }) => {
    expect(await leftBehind(() => runStage(options(backend, extra)))).toEqual({ tensors: 0, bytes: 0 });
  });

  it('interrupted (Ctrl-C) and resumed from its checkpoint', async () => {
    const run = options(backend, { method: 'apex', setting: 'full', steps: 4 }).run;
    const abort = new AbortController();
    const interrupted = await leftBehind(() =>
      expect(runStage({ ...options(backend, { method: 'apex', setting: 'full', steps: 4, signal: abort.signal, onStep: (r) => { if (r.step === 2) abort.abort(); } }), run })).rejects.toBeInstanceOf(InterruptedError),
    );
    expect(interrupted).toEqual({ tensors: 0, bytes: 0 });
    expect(await leftBehind(() => runStage({ ...options(backend, { method: 'apex', setting: 'full', steps: 4, resume: true }), run }))).toEqual({ tensors: 0, bytes: 0 });
  });
});
