import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { AdamW } from '../../src/train/adamw.js';
import { globalNorm } from '../../src/train/grad-clip.js';
import { Rng } from '../../src/util/rng.js';

const randomArray = (rng: Rng, n: number, scale: number) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

// The fused AdamW kernel (one pass per tensor) against adamw.ts's tfjs ops on the same inputs:
// a mask of ones sends a parameter down the tfjs-ops path without changing what it computes.
describe.each(['cpu', 'wasm'] as const)('training kernels on %s', (backend) => {
  it.each([0, 0.1])('AdamW (weight decay %s): the fused kernel gives the same bits as the tfjs ops over five steps', async (weightDecay) => {
    await selectBackend(backend);
    const rng = new Rng(7);
    // The last tensor is above FUSED_MAX_ELEMENTS and keeps the tfjs ops.
    const shapes = [[37], [5, 11], [3, 4, 4], [130, 130]];
    const initial = shapes.map((s) => randomArray(rng, s.reduce((a, b) => a * b), 2));
    const fusedVars = initial.map((v, i) => tf.variable(tf.tensor(v, shapes[i]!)));
    const opsVars = initial.map((v, i) => tf.variable(tf.tensor(v, shapes[i]!)));
    const ones = shapes.map((s) => tf.ones(s));
    const fused = new AdamW(fusedVars.map((variable, i) => ({ name: `t${i}`, variable, decay: i !== 1 })), { weightDecay });
    const ops = new AdamW(opsVars.map((variable, i) => ({ name: `t${i}`, variable, mask: ones[i]!, decay: i !== 1 })), { weightDecay });
    for (let step = 0; step < 5; step++) {
      // Gradients spanning many magnitudes (and a zero), so rounding is exercised.
      const grads = new Map(shapes.map((s, i) => [`t${i}`, tf.tensor(randomArray(rng, s.reduce((a, b) => a * b), 10 ** (step - 3)).map((x, j) => (j === 0 ? 0 : x)), s)] as const));
      const kernels = (await tf.profile(() => fused.apply(grads, 1e-2 * (step + 1)))).kernels.map((k) => k.name);
      // One fused kernel per tensor, and none of the element-wise ones.
      expect(kernels.filter((k) => k === 'ApexAdamW')).toHaveLength(shapes.length - 1);
      expect(kernels.filter((k) => k === 'Sqrt')).toHaveLength(1);
      ops.apply(grads, 1e-2 * (step + 1));
      tf.dispose([...grads.values()]);
    }
    for (let i = 0; i < shapes.length; i++) {
      expect(bits(fusedVars[i]!.dataSync() as Float32Array)).toEqual(bits(opsVars[i]!.dataSync() as Float32Array));
    }
    const [a, b] = [await fused.exportState(), await ops.exportState()];
    for (let i = 0; i < shapes.length; i++) {
      expect(bits(a.firstMoments.get(`t${i}`)!)).toEqual(bits(b.firstMoments.get(`t${i}`)!));
      expect(bits(a.secondMoments.get(`t${i}`)!)).toEqual(bits(b.secondMoments.get(`t${i}`)!));
    }
    // The update moved every parameter (a kernel that wrote nothing would fail here).
    expect(bits(fusedVars[0]!.dataSync() as Float32Array)).not.toEqual(bits(initial[0]!));
    fused.dispose();
    ops.dispose();
    tf.dispose([...fusedVars, ...opsVars, ...ones]);
  });

  it('global norm: one kernel over all gradients equals the float64 norm', async () => {
    await selectBackend(backend);
    const rng = new Rng(3);
    const values = [randomArray(rng, 1000, 1), randomArray(rng, 7, 100), Float32Array.of(3, 4)];
    const grads = new Map(values.map((v, i) => [`g${i}`, tf.tensor1d(v)] as const));
    let total = 0;
    for (const v of values) for (const x of v) total += x * x;
    const profile = await tf.profile(async () => expect(await globalNorm(grads)).toBe(Math.fround(Math.sqrt(Math.fround(total)))));
    expect(profile.kernels.map((k) => k.name)).toEqual(['ApexSumSquares', 'Sqrt']);
    tf.dispose([...grads.values()]);
  });

  it('global norm over small and large gradients: the kernel for the small ones, tfjs ops for the rest', async () => {
    await selectBackend(backend);
    const rng = new Rng(4);
    const values = [randomArray(rng, 20000, 1), randomArray(rng, 50, 3), randomArray(rng, 16385, 0.5)];
    const grads = new Map(values.map((v, i) => [`g${i}`, tf.tensor1d(v)] as const));
    let total = 0;
    for (const v of values) for (const x of v) total += x * x;
    const profile = await tf.profile(async () => expect(await globalNorm(grads)).toBeCloseTo(Math.sqrt(total), 3));
    const names = profile.kernels.map((k) => k.name);
    expect(names.filter((k) => k === 'ApexSumSquares')).toHaveLength(1);
    expect(names.filter((k) => k === 'Square')).toHaveLength(2);
    tf.dispose([...grads.values()]);
  });
});
