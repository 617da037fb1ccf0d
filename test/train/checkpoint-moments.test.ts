// A checkpoint asks AdamW for each parameter's moments when its writer reaches them
// (AdamW.moments), so that saving holds one tensor's moments on the JavaScript side instead of
// every trainable tensor's twice (exportState). The file must be the same bytes either way.
import * as tf from '@tensorflow/tfjs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { AdamW, type AdamWMoments } from '../../src/train/adamw.js';
import { loadTrainState, readTrainStateTensors, saveTrainState, type TrainStateScalars } from '../../src/train/train-state.js';
import { readWholeTrainState } from './train-state-whole.js';

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'apex-ckpt-moments-')); });
afterAll(async () => rm(dir, { recursive: true, force: true }));

const scalars = (step: number): TrainStateScalars => ({
  stage: 1, step, globalStep: step, tokens: 64 * step, data: { epoch: 0, index: step, shuffleSeed: 1 }, rng: [1, 2, 3, 4],
  lrPlan: { peakLr: 1e-3, totalSteps: 10, stageStarts: [0] },
}) as TrainStateScalars;

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

// webgpu (packed moments, one row read at a time) where a WebGPU adapter is asked for: by hand on
// lavapipe, `APEX_TEST_WEBGPU=1 APEX_WEBGPU_ALLOW_SOFTWARE=1 XDG_RUNTIME_DIR=/tmp npx vitest run
// test/train/checkpoint-moments.test.ts` (CI has no adapter).
const BACKENDS = process.env.APEX_TEST_WEBGPU === '1' ? (['cpu', 'wasm', 'webgpu'] as const) : (['cpu', 'wasm'] as const);

describe.each(BACKENDS)('AdamW.moments on %s', (backend) => {
  it('hands out exportState\'s moments, and a checkpoint written with it is the same file', async () => {
    await selectBackend(backend);
    expect(tf.getBackend()).toBe(backend);
    // A plain matrix, one trained by rows (mask), and a small vector (the fused kernels' size).
    const seeded = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k + 0.3));
    const w = tf.variable(tf.tensor2d(seeded(24, 1.1), [4, 6]));
    const r = tf.variable(tf.tensor2d(seeded(40, 0.7), [8, 5]));
    const a = tf.variable(tf.tensor1d(seeded(3, 2.3)));
    const mask = tf.tensor2d([1, 0, 1, 1, 0, 0, 1, 0], [8, 1]);
    const opt = new AdamW([{ name: 'w', variable: w }, { name: 'r', variable: r, mask }, { name: 'a', variable: a, decay: false }], { weightDecay: 0.1 });
    for (let step = 1; step <= 3; step++) {
      const grads = new Map<string, tf.Tensor>([['w', tf.tensor2d(seeded(24, step), [4, 6])], ['r', tf.tensor2d(seeded(40, step + 0.5), [8, 5])], ['a', tf.tensor1d(seeded(3, step * 3))]]);
      opt.apply(grads, 1e-2);
      tf.dispose([...grads.values()]);
    }
    const state = await opt.exportState();
    const moments = opt.moments();
    expect([moments.step, moments.names]).toEqual([3, ['w', 'r', 'a']]);
    for (const name of moments.names) {
      expect(bits(await moments.first(name))).toEqual(bits(state.firstMoments.get(name)!));
      expect(bits(await moments.second(name))).toEqual(bits(state.secondMoments.get(name)!));
    }
    const trainable = new Map([['w', w], ['r', r], ['a', a]].map(([name, v]) => [name as string, { shape: (v as tf.Variable).shape, values: () => (v as tf.Variable).data() as Promise<Float32Array> }]));
    const eager = await saveTrainState(join(dir, backend, 'eager'), { scalars: scalars(3), trainable, optimizer: state });
    const lazy = await saveTrainState(join(dir, backend, 'lazy'), { scalars: scalars(3), trainable, optimizer: opt.moments() });
    expect(await readFile(join(lazy, 'tensors.safetensors'))).toEqual(await readFile(join(eager, 'tensors.safetensors')));
    expect(await readFile(join(lazy, 'state.json'), 'utf8')).toBe(await readFile(join(eager, 'state.json'), 'utf8'));
    opt.dispose();
    tf.dispose([w, r, a, mask]);
  });
});

describe.each(BACKENDS)('a resume on %s', (backend) => {
  it('restores a checkpoint one tensor at a time into a fresh AdamW (restoreMoments, restoreStep): the same state, the same next step, no tensor left behind', async () => {
    await selectBackend(backend);
    expect(tf.getBackend()).toBe(backend);
    const seeded = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k + 0.3));
    // As above: a plain matrix, one trained by rows (webgpu packs both, mv [2, size]), a small vector.
    const make = () => {
      const w = tf.variable(tf.tensor2d(seeded(24, 1.1), [4, 6]));
      const r = tf.variable(tf.tensor2d(seeded(40, 0.7), [8, 5]));
      const a = tf.variable(tf.tensor1d(seeded(3, 2.3)));
      return { w, r, a };
    };
    const mask = tf.tensor2d([1, 0, 1, 1, 0, 0, 1, 0], [8, 1]);
    const params = (v: ReturnType<typeof make>) => [{ name: 'w', variable: v.w }, { name: 'r', variable: v.r, mask }, { name: 'a', variable: v.a, decay: false }];
    const grads = (step: number) => new Map<string, tf.Tensor>([['w', tf.tensor2d(seeded(24, step), [4, 6])], ['r', tf.tensor2d(seeded(40, step + 0.5), [8, 5])], ['a', tf.tensor1d(seeded(3, step * 3))]]);
    const apply = (opt: AdamW, step: number) => {
      const g = grads(step);
      opt.apply(g, 1e-2);
      tf.dispose([...g.values()]);
    };
    const first = make();
    const opt = new AdamW(params(first), { weightDecay: 0.1 });
    for (let step = 1; step <= 3; step++) apply(opt, step);
    const trainable = new Map(Object.entries(first).map(([name, v]) => [name, { shape: v.shape, values: () => v.data() as Promise<Float32Array> }]));
    const path = await saveTrainState(join(dir, backend, 'resume'), { scalars: scalars(3), trainable, optimizer: opt.moments() });

    const second = make();
    for (const v of Object.values(second)) v.assign(tf.zerosLike(v));
    const resumed = new AdamW(params(second), { weightDecay: 0.1 });
    const before = tf.memory().numTensors;
    const loaded = await loadTrainState(path);
    const vars = second as Record<string, tf.Variable>;
    await readTrainStateTensors(loaded, (t) => {
      tf.tidy(() => vars[t.name]!.assign(tf.tensor(t.values, t.shape as number[], 'float32')));
      resumed.restoreMoments(t.name, t.firstMoment, t.secondMoment);
    });
    resumed.restoreStep(loaded.optimizerStep);
    expect(tf.memory().numTensors).toBe(before);

    expect(resumed.step).toBe(3);
    const [want, got] = [await opt.exportState(), await resumed.exportState()];
    for (const name of ['w', 'r', 'a']) {
      expect(bits(got.firstMoments.get(name)!)).toEqual(bits(want.firstMoments.get(name)!));
      expect(bits(got.secondMoments.get(name)!)).toEqual(bits(want.secondMoments.get(name)!));
      expect(bits(await vars[name]!.data() as Float32Array)).toEqual(bits(await (first as Record<string, tf.Variable>)[name]!.data() as Float32Array));
    }
    // The next step from the restored state is the uninterrupted one's, bit for bit.
    apply(opt, 4);
    apply(resumed, 4);
    for (const name of ['w', 'r', 'a']) {
      expect(bits(await vars[name]!.data() as Float32Array)).toEqual(bits(await (first as Record<string, tf.Variable>)[name]!.data() as Float32Array));
    }
    opt.dispose();
    resumed.dispose();
    tf.dispose([...Object.values(first), ...Object.values(second), mask]);
  });
});

it('a checkpoint reads each tensor\'s moments only when its writer reaches that tensor', async () => {
  // Every read poisons (NaN) the arrays handed out before it: had the checkpoint asked for a
  // tensor before the writer was done with the previous one (all moments first, as exportState
  // did), the file would hold NaNs. The writer copies each tensor before it asks for the next.
  const handedOut: Float32Array[] = [];
  const read: string[] = [];
  const original = (what: string, n: number) => Float32Array.from({ length: n }, (_, i) => i + 10 * what.length);
  const values = (what: string, n: number) => {
    for (const earlier of handedOut) earlier.fill(Number.NaN);
    read.push(what);
    const out = original(what, n);
    handedOut.push(out);
    return out;
  };
  const moments: AdamWMoments = {
    step: 7,
    names: ['x', 'y'],
    first: async (name) => values(`m.${name}`, name === 'x' ? 6 : 2),
    second: async (name) => values(`v.${name}`, name === 'x' ? 6 : 2),
  };
  const trainable = new Map([
    ['x', { shape: [2, 3], values: () => values('param.x', 6) }],
    ['y', { shape: [2], values: () => values('param.y', 2) }],
  ]);
  const path = await saveTrainState(join(dir, 'order'), { scalars: scalars(7), trainable, optimizer: moments });
  expect(read.sort()).toEqual(['m.x', 'm.y', 'param.x', 'param.y', 'v.x', 'v.y']);
  const loaded = await readWholeTrainState(path);
  expect(loaded.optimizer.step).toBe(7);
  for (const name of ['x', 'y']) {
    const n = name === 'x' ? 6 : 2;
    expect(Array.from(loaded.optimizer.firstMoments.get(name)!)).toEqual(Array.from(original(`m.${name}`, n)));
    expect(Array.from(loaded.optimizer.secondMoments.get(name)!)).toEqual(Array.from(original(`v.${name}`, n)));
    expect(Array.from(loaded.trainable.get(name)!.values)).toEqual(Array.from(original(`param.${name}`, n)));
  }
});
