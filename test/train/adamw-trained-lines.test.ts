// AdamW over a parameter that names its trained rows or columns (`lines`, APEX `structured`):
// moments of those lines only, the same bits as the masked whole-tensor update, checkpoints in
// the whole-tensor form (zeros outside the lines), restores that refuse moments of other lines.
// The reference is the masked update without lines, itself checked against a hand-computed
// example and against the tfjs operations (adamw.test.ts, train-kernels.test.ts).
//
// The webgpu backend joins with `APEX_TEST_WEBGPU=1 APEX_WEBGPU_ALLOW_SOFTWARE=1
// XDG_RUNTIME_DIR=/tmp` (lavapipe), as in checkpoint-moments.test.ts.
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { AdamW, type OptimizedParameter, type TrainedLines } from '../../src/train/adamw.js';
import { Rng } from '../../src/util/rng.js';

const BACKENDS = process.env.APEX_TEST_WEBGPU === '1' ? (['cpu', 'wasm', 'webgpu'] as const) : (['cpu', 'wasm'] as const);

const randomArray = (rng: Rng, n: number, scale: number) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));

interface Case {
  readonly shape: [number, number];
  readonly lines: TrainedLines;
}

// Rows and columns; [130, 132] is above the small-tensor kernel's size (tfjs ops on cpu); [10, 7]
// by columns gives [10, 3], not whole SIMD vectors (the JavaScript kernel on wasm).
const CASES: readonly Case[] = [
  { shape: [24, 12], lines: { axis: 0, indices: Int32Array.from([22, 1, 2, 7, 13]) } },
  { shape: [12, 24], lines: { axis: 1, indices: Int32Array.from([0, 5, 6, 23]) } },
  { shape: [130, 132], lines: { axis: 0, indices: Int32Array.from({ length: 40 }, (_, i) => 3 * i + 1) } },
  { shape: [10, 7], lines: { axis: 1, indices: Int32Array.from([6, 2, 3]) } },
];

function maskOf({ shape, lines }: Case): tf.Tensor {
  const extent = shape[lines.axis];
  const vector = new Float32Array(extent);
  for (const l of lines.indices) vector[l] = 1;
  return tf.tensor(vector, lines.axis === 0 ? [extent, 1] : [1, extent]);
}

describe.each(BACKENDS)('AdamW with trained lines on %s', (backend) => {
  const owned: tf.Tensor[] = [];
  afterAll(() => tf.dispose(owned.splice(0)));

  it.each([true, false])('gives the masked update\'s bits over five steps, with decay and a clipping scale (kernels %s)', async (kernels) => {
    await selectBackend(backend);
    const rng = new Rng(11);
    const size = (c: Case) => c.shape[0] * c.shape[1];
    const initial = CASES.map((c) => randomArray(rng, size(c), 2));
    const masks = CASES.map(maskOf);
    const build = (withLines: boolean) => {
      const vars = CASES.map((c, i) => tf.variable(tf.tensor(initial[i]!, c.shape)));
      const params: OptimizedParameter[] = vars.map((variable, i) => ({ name: `t${i}`, variable, mask: masks[i]!, ...(withLines ? { lines: CASES[i]!.lines } : {}) }));
      return { vars, opt: new AdamW(params, { weightDecay: 0.1, kernels }) };
    };
    const masked = build(false);
    const lined = build(true);
    for (let step = 0; step < 5; step++) {
      const grads = new Map(CASES.map((c, i) => [`t${i}`, tf.tensor(randomArray(rng, size(c), 10 ** (step - 3)), c.shape)] as const));
      const scale = tf.scalar(0.25 + step / 10);
      masked.opt.apply(grads, 1e-2 * (step + 1), scale);
      // The lines' gradients (as the trainer passes them) on odd steps, whole ones on even steps.
      const given = step % 2 === 1 ? new Map([...grads].map(([n, g]) => [n, lined.opt.trainedGradient(n, g)] as const)) : grads;
      if (step % 2 === 1) {
        for (const [n, g] of given) expect(g.shape).not.toEqual(grads.get(n)!.shape);
      }
      lined.opt.apply(given, 1e-2 * (step + 1), scale);
      tf.dispose([...grads.values(), scale, ...(given !== grads ? given.values() : [])]);
    }
    const [a, b] = [await masked.opt.exportState(), await lined.opt.exportState()];
    for (let i = 0; i < CASES.length; i++) {
      const after = (await lined.vars[i]!.data()) as Float32Array;
      expect(bits(after)).toEqual(bits((await masked.vars[i]!.data()) as Float32Array));
      expect(bits(after)).not.toEqual(bits(initial[i]!));
      expect(bits(b.firstMoments.get(`t${i}`)!)).toEqual(bits(a.firstMoments.get(`t${i}`)!));
      expect(bits(b.secondMoments.get(`t${i}`)!)).toEqual(bits(a.secondMoments.get(`t${i}`)!));
    }
    for (const run of [masked, lined]) {
      run.opt.dispose();
      tf.dispose(run.vars);
    }
    tf.dispose(masks);
  });

  it('keeps moments of the trained lines only', async () => {
    await selectBackend(backend);
    const c: Case = { shape: [256, 64], lines: { axis: 0, indices: Int32Array.from({ length: 8 }, (_, i) => 30 * i) } };
    const variable = tf.variable(tf.zeros(c.shape));
    const mask = maskOf(c);
    owned.push(variable, mask);
    const bytesOf = (params: OptimizedParameter[]) => {
      const before = tf.memory().numBytes;
      const opt = new AdamW(params);
      const grown = tf.memory().numBytes - before;
      opt.dispose();
      return grown;
    };
    const wholeBytes = bytesOf([{ name: 'w', variable, mask }]);
    const lineBytes = bytesOf([{ name: 'w', variable, mask, lines: c.lines }]);
    // Two moments of 256 × 64 floats (and, for the masked slot, its mask copies) …
    expect(wholeBytes).toBeGreaterThanOrEqual(2 * 256 * 64 * 4);
    // … against two of 8 × 64 floats plus the lines' two int32 index vectors (8 and 256 entries).
    expect(lineBytes).toBeLessThanOrEqual(2 * 8 * 64 * 4 + 4 * (8 + 256));
    expect(lineBytes).toBeGreaterThanOrEqual(2 * 8 * 64 * 4);
  });

  it('hands the trainer the lines of a gradient, rows or columns', async () => {
    await selectBackend(backend);
    const rows = tf.variable(tf.zeros([4, 3]));
    const cols = tf.variable(tf.zeros([3, 4]));
    const opt = new AdamW([
      { name: 'rows', variable: rows, lines: { axis: 0, indices: Int32Array.from([3, 1]) } },
      { name: 'cols', variable: cols, lines: { axis: 1, indices: Int32Array.from([2]) } },
    ]);
    const g = tf.tensor2d([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]);
    const gt = tf.tensor2d([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]);
    const r = opt.trainedGradient('rows', g);
    const c = opt.trainedGradient('cols', gt);
    expect(r.shape).toEqual([2, 3]);
    expect(Array.from(await r.data())).toEqual([9, 10, 11, 3, 4, 5]);
    expect(c.shape).toEqual([3, 1]);
    expect(Array.from(await c.data())).toEqual([2, 6, 10]);
    expect(() => opt.apply(new Map([['rows', tf.zeros([3, 3])], ['cols', c]]), 0.1)).toThrow(/'rows' has shape \[3,3\], expected \[2,3\] \(its trained lines\) or \[4,3\]/);
    tf.dispose([g, gt, r, c]);
    opt.dispose();
    tf.dispose([rows, cols]);
  });

  it('restores whole-tensor moments (its own, or a masked run\'s) and continues with the same bits; refuses moments of other lines', async () => {
    await selectBackend(backend);
    const c = CASES[1]!;
    const rng = new Rng(5);
    const start = randomArray(rng, c.shape[0] * c.shape[1], 1);
    const grads = Array.from({ length: 4 }, () => tf.tensor(randomArray(rng, start.length, 0.1), c.shape));
    owned.push(...grads);
    const mask = maskOf(c);
    owned.push(mask);
    const run = (withLines: boolean) => {
      const variable = tf.variable(tf.tensor(start, c.shape));
      const opt = new AdamW([{ name: 'w', variable, mask, ...(withLines ? { lines: c.lines } : {}) }], { weightDecay: 0.1 });
      return { variable, opt };
    };
    const straight = run(true);
    for (const g of grads) straight.opt.apply(new Map([['w', g]]), 0.01);
    for (const source of [true, false]) {
      // Two steps, a checkpoint's moments (moments(): the writer's form), then a fresh optimizer.
      const first = run(source);
      for (const g of grads.slice(0, 2)) first.opt.apply(new Map([['w', g]]), 0.01);
      const moments = first.opt.moments();
      const m = await moments.first('w');
      const v = await moments.second('w');
      expect(m).toHaveLength(start.length);
      const resumed = run(true);
      resumed.variable.assign(first.variable);
      resumed.opt.restoreMoments('w', m, v);
      resumed.opt.restoreStep(moments.step);
      for (const g of grads.slice(2)) resumed.opt.apply(new Map([['w', g]]), 0.01);
      expect(bits((await resumed.variable.data()) as Float32Array)).toEqual(bits((await straight.variable.data()) as Float32Array));
      // A moment in column 1, which this run does not train: saved by a run with other lines.
      const other = Float32Array.from(m);
      other[1] = 1e-3;
      expect(() => resumed.opt.restoreMoments('w', other, v)).toThrow(/non-zero moment in column 1, which this run does not train/);
      for (const r of [first, resumed]) {
        r.opt.dispose();
        r.variable.dispose();
      }
    }
    straight.opt.dispose();
    straight.variable.dispose();
  });

  it('leaks no tensor per step', async () => {
    await selectBackend(backend);
    const c = CASES[0]!;
    const variable = tf.variable(tf.ones(c.shape));
    const opt = new AdamW([{ name: 'w', variable, lines: c.lines }], { weightDecay: 0.1 });
    const g = tf.ones(c.shape);
    const scale = tf.scalar(0.5);
    opt.apply(new Map([['w', g]]), 0.1, scale);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) opt.apply(new Map([['w', g]]), 0.1, scale);
    expect(tf.memory().numTensors).toBe(before);
    opt.dispose();
    tf.dispose([variable, g, scale]);
  });
});
