import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { Rng } from '../../src/util/rng.js';
import { writeSafetensorsFile, f32Tensor } from '../../src/io/safetensors-writer.js';
import { readWholeTrainState } from './train-state-whole.js';
import {
  type TrainStateToSave,
  checkpointName,
  latestCheckpoint,
  listCheckpoints,
  loadTrainState,
  readTrainStateTensors,
  saveTrainState,
  withRecomputeSpan,
} from '../../src/train/train-state.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apex-train-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function state(step: number): TrainStateToSave {
  const rng = new Rng(step);
  const values = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
  const w = values(6);
  w[0] = -0; // bit patterns survive, signed zero included
  w[1] = 1e-40; // subnormal
  return {
    scalars: {
      stage: 2,
      step,
      globalStep: 100 + step,
      tokens: 4096 * step,
      data: { epoch: 1, index: 17 * step, shuffleSeed: 42 },
      rng: rng.state(),
      lrPlan: { peakLr: 2e-5, totalSteps: 200, stageStarts: [0, 100] },
      settings: { method: 'apex', setting: null, 'batch size': 4, 'embeddings trained': false },
      backend: 'wasm',
    },
    trainable: new Map([
      ['model.layers.0.self_attn.v_proj.weight', { shape: [2, 3], values: w }],
      ['model.layers.0.mlp.apex.a', { shape: [4], values: () => Float32Array.from([1, 1.5, 0.25, step]) }],
    ]),
    optimizer: {
      step,
      firstMoments: new Map([
        ['model.layers.0.self_attn.v_proj.weight', values(6)],
        ['model.layers.0.mlp.apex.a', values(4)],
      ]),
      secondMoments: new Map([
        ['model.layers.0.self_attn.v_proj.weight', values(6)],
        ['model.layers.0.mlp.apex.a', values(4)],
      ]),
    },
  };
}

function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

describe('trainer-state checkpoints', () => {
  it('round-trips tensors bit-exactly and scalars exactly', async () => {
    const saved = state(5);
    const path = await saveTrainState(dir, saved);
    expect(path).toBe(join(dir, 'step-00000005'));
    const loaded = await readWholeTrainState(path);
    expect(loaded.scalars).toEqual(saved.scalars);
    expect(loaded.optimizer.step).toBe(5);
    const w = loaded.trainable.get('model.layers.0.self_attn.v_proj.weight')!;
    expect(w.shape).toEqual([2, 3]);
    expect(bits(w.values)).toEqual(bits(saved.trainable.get('model.layers.0.self_attn.v_proj.weight')!.values as Float32Array));
    expect(Array.from(loaded.trainable.get('model.layers.0.mlp.apex.a')!.values)).toEqual([1, 1.5, 0.25, 5]);
    for (const [name, m] of saved.optimizer.firstMoments) expect(bits(loaded.optimizer.firstMoments.get(name)!)).toEqual(bits(m));
    for (const [name, v] of saved.optimizer.secondMoments) expect(bits(loaded.optimizer.secondMoments.get(name)!)).toEqual(bits(v));
    // the restored RNG continues the same stream
    const original = Rng.fromState([...saved.scalars.rng]);
    const restored = Rng.fromState([...loaded.scalars.rng]);
    expect(restored.nextUint32()).toBe(original.nextUint32());
  });

  it('keeps the newest N and finds the latest complete checkpoint', async () => {
    expect(await latestCheckpoint(dir)).toBeUndefined();
    expect(await latestCheckpoint(join(dir, 'missing'))).toBeUndefined();
    for (const step of [2, 4, 6, 8]) await saveTrainState(dir, state(step), 3);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([4, 6, 8]);
    expect(await latestCheckpoint(dir)).toBe(join(dir, checkpointName(8)));
    // nothing but the checkpoints is left behind (no temporary folders, no locks)
    expect((await readdir(dir)).sort()).toEqual(['step-00000004', 'step-00000006', 'step-00000008']);
  });

  it('removes the lock files that killed savers left, and only theirs', async () => {
    const lock = (pid: number) => `${JSON.stringify({ pid, hostname: hostname(), startedAt: new Date().toISOString() })}\n`;
    await writeFile(join(dir, 'step-00000002.lock'), lock(2 ** 22 + 12345)); // beyond Linux's pid_max: not running
    await writeFile(join(dir, 'step-00000001.lock'), lock(process.pid)); // a live owner
    await saveTrainState(dir, state(4));
    expect((await readdir(dir)).sort()).toEqual(['step-00000001.lock', 'step-00000004']);
  });

  it('ignores incomplete checkpoints: temporary folders and folders without their files', async () => {
    await saveTrainState(dir, state(3));
    // a writer killed before its rename leaves a temporary folder with a higher step
    await mkdir(join(dir, 'step-00000009.tmp-999999-abcd'));
    await writeFile(join(dir, 'step-00000009.tmp-999999-abcd', 'state.json'), '{}');
    // a folder with the final name but no tensors (not written by saveTrainState)
    await mkdir(join(dir, 'step-00000010'));
    await writeFile(join(dir, 'step-00000010', 'state.json'), '{}');
    expect(await latestCheckpoint(dir)).toBe(join(dir, 'step-00000003'));
  });

  it('replaces a checkpoint of the same step', async () => {
    await saveTrainState(dir, state(7));
    const again = state(7);
    const replaced: TrainStateToSave = { ...again, scalars: { ...again.scalars, tokens: 1 } };
    await saveTrainState(dir, replaced);
    expect((await loadTrainState(join(dir, 'step-00000007'))).scalars.tokens).toBe(1);
  });

  it('refuses trainables without moments and unreadable checkpoints', async () => {
    const s = state(1);
    const bad: TrainStateToSave = { ...s, optimizer: { ...s.optimizer, firstMoments: new Map() } };
    await expect(saveTrainState(dir, bad)).rejects.toThrow(/no optimizer moments/);
    expect(await latestCheckpoint(dir)).toBeUndefined();
    await mkdir(join(dir, 'broken'));
    await writeFile(join(dir, 'broken', 'state.json'), '{"version": 99}');
    await expect(loadTrainState(join(dir, 'broken'))).rejects.toThrow(InputError);
    await expect(loadTrainState(join(dir, 'nothing'))).rejects.toThrow(/unreadable/);
  });

  it('refuses a checkpoint whose tensor bytes or scalars changed after it was written (a flipped bit, an edited digit)', async () => {
    const path = await saveTrainState(dir, state(5));
    const tensorsFile = join(path, 'tensors.safetensors');
    const pristine = await readFile(tensorsFile);
    const flipped = Buffer.from(pristine);
    flipped[flipped.length - 3]! ^= 0x10; // inside the last tensor's data
    await writeFile(tensorsFile, flipped);
    // Opening reads the header only; the flipped bit is found when the tensors are read, after
    // the tensors before it were handed over.
    const loaded = await loadTrainState(path);
    const visited: string[] = [];
    await expect(readTrainStateTensors(loaded, (t) => { visited.push(t.name); })).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringMatching(/tensor '[a-z_]+\.model\.layers\.0\.[a-z_.]+' does not match its recorded sha256: the checkpoint is corrupt/) });
    expect(visited.length).toBeLessThan(loaded.trainable.size);
    await writeFile(tensorsFile, pristine);
    const stateFile = join(path, 'state.json');
    const text = await readFile(stateFile, 'utf8');
    await writeFile(stateFile, text.replace('"tokens":20480', '"tokens":20481'));
    await expect(loadTrainState(path)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining('the scalars (step, data position, RNG state, …) do not match') });
    await writeFile(stateFile, text);
    expect((await loadTrainState(path)).scalars.tokens).toBe(20480);
  });
});

describe('a state.json whose optimizer fields are not what apex writes', () => {
  // optimizerStep and trainable lie outside scalarsSha256 (and version 1 records no digest):
  // a hand-edited or damaged state.json is refused when the checkpoint is opened (exit 3, a dry
  // run too), not by AdamW after every tensor was restored (a plain Error: exit 1, "a bug").
  it.each([
    ['optimizerStep missing', (f: Record<string, unknown>) => { delete f.optimizerStep; }],
    ['optimizerStep negative', (f: Record<string, unknown>) => { f.optimizerStep = -1; }],
    ['optimizerStep a fraction', (f: Record<string, unknown>) => { f.optimizerStep = 2.5; }],
    ['optimizerStep a string', (f: Record<string, unknown>) => { f.optimizerStep = '3'; }],
    ['trainable not a list', (f: Record<string, unknown>) => { f.trainable = 'model.layers.0.mlp.apex.a'; }],
    ['trainable missing', (f: Record<string, unknown>) => { delete f.trainable; }],
    // Well-formed but not what the digests cover: the optimizer steps once per training step, and
    // the tensors' sha256 are recorded by name.
    ['optimizerStep another step count', (f: Record<string, unknown>) => { f.optimizerStep = 1000; }],
    ['trainable without one of its tensors', (f: Record<string, unknown>) => { f.trainable = (f.trainable as string[]).slice(1); }],
    ['trainable with a tensor twice', (f: Record<string, unknown>) => { f.trainable = [...(f.trainable as string[]), (f.trainable as string[])[0]]; }],
    // tensorSha256 is read with Object.keys: a null (or a non-object) was a TypeError (exit 1).
    ['tensorSha256 null', (f: Record<string, unknown>) => { f.tensorSha256 = null; }],
    ['tensorSha256 a string', (f: Record<string, unknown>) => { f.tensorSha256 = 'abc'; }],
    ['tensorSha256 a list', (f: Record<string, unknown>) => { f.tensorSha256 = []; }],
    ['a tensor\'s sha256 not a string', (f: Record<string, unknown>) => { const t = f.tensorSha256 as Record<string, unknown>; t[Object.keys(t)[0]!] = 1; }],
  ])('%s: CHECKPOINT_CORRUPT', async (_what, edit) => {
    const path = await saveTrainState(dir, state(3));
    const stateFile = join(path, 'state.json');
    const file = JSON.parse(await readFile(stateFile, 'utf8')) as Record<string, unknown>;
    edit(file);
    await writeFile(stateFile, JSON.stringify(file));
    await expect(loadTrainState(path)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT' });
    await expect(loadTrainState(path)).rejects.toBeInstanceOf(InputError);
  });
});

describe('activation recomputation over a stage\'s sessions (provenance)', () => {
  it('adds a span only when a session changes the setting; an older checkpoint\'s steps are unknown (null)', () => {
    expect(withRecomputeSpan(undefined, 0, false)).toEqual([{ fromStep: 0, recompute: false }]);
    expect(withRecomputeSpan([{ fromStep: 0, recompute: false }], 4, false)).toEqual([{ fromStep: 0, recompute: false }]);
    expect(withRecomputeSpan([{ fromStep: 0, recompute: false }], 4, true)).toEqual([{ fromStep: 0, recompute: false }, { fromStep: 4, recompute: true }]);
    expect(withRecomputeSpan(undefined, 6, true)).toEqual([{ fromStep: 0, recompute: null }, { fromStep: 6, recompute: true }]);
  });
});

describe('opening a checkpoint, and reading its tensors one at a time', () => {

  it('opens a checkpoint from its header: every trainable tensor with both moments, of one shape', async () => {
    const path = await saveTrainState(dir, state(3));
    const loaded = await loadTrainState(path);
    expect(loaded.optimizerStep).toBe(3);
    expect([...loaded.trainable]).toEqual([['model.layers.0.self_attn.v_proj.weight', [2, 3]], ['model.layers.0.mlp.apex.a', [4]]]);
    const tensorsFile = join(path, 'tensors.safetensors');
    const whole = await readWholeTrainState(path);
    const rewrite = async (drop: string, reshape?: string) => {
      const tensors = [...whole.trainable].flatMap(([name, t]) => [
        f32Tensor(`param.${name}`, t.shape, t.values),
        f32Tensor(`adam_m.${name}`, `adam_m.${name}` === reshape ? [t.shape.reduce((a, b) => a * b)] : t.shape, whole.optimizer.firstMoments.get(name)!),
        f32Tensor(`adam_v.${name}`, t.shape, whole.optimizer.secondMoments.get(name)!),
      ]).filter((t) => t.name !== drop);
      await writeSafetensorsFile(tensorsFile, tensors, { format: 'apex-train-state' });
    };
    await rewrite('adam_v.model.layers.0.mlp.apex.a');
    await expect(loadTrainState(path)).rejects.toMatchObject({ code: 'CHECKPOINT_INCOMPLETE', message: expect.stringContaining("lacks tensor 'adam_v.model.layers.0.mlp.apex.a'") });
    await rewrite('', 'adam_m.model.layers.0.self_attn.v_proj.weight');
    await expect(loadTrainState(path)).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT', message: expect.stringContaining("tensor 'adam_m.model.layers.0.self_attn.v_proj.weight' has shape [6], its parameter 'param.model.layers.0.self_attn.v_proj.weight' [2,3]") });
  });

  it('hands over one trainable tensor at a time, in the saved order, keeping none of those it handed over', async () => {
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const saved = state(4);
    const path = await saveTrainState(dir, saved);
    const handed: WeakRef<Float32Array>[] = [];
    const alive: number[] = [];
    const names: string[] = [];
    await readTrainStateTensors(await loadTrainState(path), async (t) => {
      names.push(t.name);
      expect(bits(t.values)).toEqual(bits(await (async () => { const v = saved.trainable.get(t.name)!.values; return typeof v === 'function' ? v() : v; })()));
      expect(bits(t.firstMoment)).toEqual(bits(saved.optimizer.firstMoments.get(t.name)!));
      expect(bits(t.secondMoment)).toEqual(bits(saved.optimizer.secondMoments.get(t.name)!));
      // WeakRefs made in this job keep their targets to its end: collect in a later one.
      await new Promise((done) => setTimeout(done, 0));
      gc();
      alive.push(handed.filter((r) => r.deref() !== undefined).length);
      handed.push(new WeakRef(t.values), new WeakRef(t.firstMoment), new WeakRef(t.secondMoment));
    });
    expect(names).toEqual(['model.layers.0.self_attn.v_proj.weight', 'model.layers.0.mlp.apex.a']);
    expect(alive).toEqual([0, 0]);
  });
});
