// `apex run` does everything in one process: evaluations of the base model and of every fused
// stage, the analysis, each stage of APEX and of the vanilla baseline. Whatever one of them left
// on the tf heap would add up over the run (AdamW's moments did, twice the trainable tensors per
// stage; test/train/stage-tensor-leak.test.ts). The second of two identical runs must end with
// the engine holding what it held before it (the first also sets up the backend's kernels).
// Nor may a run leave open files, threads (tokenization and sha256 workers), process listeners
// or a larger wasm heap behind (the heap never shrinks, so growth per run would be growth per
// stage too): measured the same way, after the first run and after the second.
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync } from 'node:fs';
import { expect, it } from 'vitest';
import path from 'node:path';
import { runPipeline } from '../../src/pipeline/run.js';
import { resolveConfig } from '../../src/run/config.js';
import { configFolder, microConfig } from './run-fixtures.js';

/** What the process holds outside the tf engine (Linux: /proc/self). */
function processResources(): Record<string, number> {
  const wasm = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm;
  const count = (dir: string) => (existsSync(dir) ? readdirSync(dir).length : 0);
  return {
    openFiles: count('/proc/self/fd'),
    threads: count('/proc/self/task'),
    wasmHeapBytes: wasm?.HEAPU8.buffer.byteLength ?? 0,
    ...Object.fromEntries(['SIGINT', 'SIGTERM', 'exit', 'warning', 'uncaughtException', 'unhandledRejection'].map((e) => [`${e} listeners`, process.listenerCount(e)])),
  };
}

it('a two-stage run with its vanilla baseline leaves no tensor behind', async () => {
  const run = async () => {
    const { file } = configFolder(microConfig());
    await runPipeline({ resolved: await resolveConfig({ file, overrides: [], cwd: path.dirname(file) }) });
  };
  await run();
  const before = tf.memory();
  const held = processResources();
  await run();
  const after = tf.memory();
  expect({ tensors: after.numTensors - before.numTensors, bytes: after.numBytes - before.numBytes }).toEqual({ tensors: 0, bytes: 0 });
  expect(processResources()).toEqual(held);
}, 300_000);
