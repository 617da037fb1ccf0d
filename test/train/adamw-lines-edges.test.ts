// AdamW `lines` at the edges: every line of the parameter, listed out of order (its lines'
// shape is then the whole shape, so a whole gradient must still be read as the whole tensor),
// and no line at all (nothing trains).
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { AdamW, type OptimizedParameter, type TrainedLines } from '../../src/train/adamw.js';
import { Rng } from '../../src/util/rng.js';

const BACKENDS = process.env.APEX_TEST_WEBGPU === '1' ? (['cpu', 'wasm', 'webgpu'] as const) : (['cpu', 'wasm'] as const);
const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer, x.byteOffset, x.length));
const randomArray = (rng: Rng, n: number, scale: number) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);

describe.each(BACKENDS)('AdamW lines at the edges on %s', (backend) => {
  it.each([
    { shape: [4, 8] as [number, number], lines: { axis: 0, indices: Int32Array.from([3, 0, 2, 1]) } as TrainedLines },
    { shape: [8, 4] as [number, number], lines: { axis: 1, indices: Int32Array.from([2, 3, 1, 0]) } as TrainedLines },
  ])('every line, out of order: whole gradients give the whole-tensor update ($lines.axis)', async ({ shape, lines }) => {
    await selectBackend(backend);
    const rng = new Rng(2);
    const start = randomArray(rng, shape[0] * shape[1], 1);
    const grads = Array.from({ length: 3 }, () => tf.tensor(randomArray(rng, start.length, 0.1), shape));
    const run = (withLines: boolean) => {
      const variable = tf.variable(tf.tensor(start, shape));
      const param: OptimizedParameter = { name: 'w', variable, ...(withLines ? { lines } : {}) };
      const opt = new AdamW([param], { weightDecay: 0.1 });
      for (const g of grads) opt.apply(new Map([['w', g]]), 0.01);
      return { variable, opt };
    };
    const plain = run(false);
    const lined = run(true);
    expect(bits((await lined.variable.data()) as Float32Array)).toEqual(bits((await plain.variable.data()) as Float32Array));
    const [a, b] = [await plain.opt.exportState(), await lined.opt.exportState()];
    expect(bits(b.firstMoments.get('w')!)).toEqual(bits(a.firstMoments.get('w')!));
    for (const r of [plain, lined]) {
      r.opt.dispose();
      r.variable.dispose();
    }
    tf.dispose(grads);
  });

  it('no line: nothing changes, the moments stay zero', async () => {
    await selectBackend(backend);
    const variable = tf.variable(tf.tensor2d([[1, 2, 3, 4], [5, 6, 7, 8]]));
    const before = Float32Array.from((await variable.data()) as Float32Array);
    const opt = new AdamW([{ name: 'w', variable, lines: { axis: 0, indices: new Int32Array(0) } }], { weightDecay: 0.1 });
    const g = tf.ones([2, 4]);
    const trained = opt.trainedGradient('w', g);
    opt.apply(new Map([['w', g]]), 0.1);
    opt.apply(new Map([['w', trained]]), 0.1);
    expect(bits((await variable.data()) as Float32Array)).toEqual(bits(before));
    const state = await opt.exportState();
    expect(Array.from(state.firstMoments.get('w')!)).toEqual(new Array(8).fill(0));
    tf.dispose([g, trained]);
    opt.dispose();
    variable.dispose();
  });
});
