// `apex run` does everything in one process: evaluations of the base model and of every fused
// stage, the analysis, each stage of APEX and of the vanilla baseline. Whatever one of them left
// on the tf heap would add up over the run (AdamW's moments did, twice the trainable tensors per
// stage; test/train/stage-tensor-leak.test.ts). The second of two identical runs must end with
// the engine holding what it held before it (the first also sets up the backend's kernels).
import * as tf from '@tensorflow/tfjs';
import { expect, it } from 'vitest';
import path from 'node:path';
import { runPipeline } from '../../src/pipeline/run.js';
import { resolveConfig } from '../../src/run/config.js';
import { configFolder, microConfig } from './run-fixtures.js';

it('a two-stage run with its vanilla baseline leaves no tensor behind', async () => {
  const run = async () => {
    const { file } = configFolder(microConfig());
    await runPipeline({ resolved: await resolveConfig({ file, overrides: [], cwd: path.dirname(file) }) });
  };
  await run();
  const before = tf.memory();
  await run();
  const after = tf.memory();
  expect({ tensors: after.numTensors - before.numTensors, bytes: after.numBytes - before.numBytes }).toEqual({ tensors: 0, bytes: 0 });
}, 300_000);
