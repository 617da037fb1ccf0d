import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { AdamW } from '../../src/train/adamw.js';
import { globalNorm } from '../../src/train/grad-clip.js';
import { Rng } from '../../src/util/rng.js';

const randomArray = (rng: Rng, n: number, scale: number) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

// apex's AdamW kernels (one JavaScript pass per small tensor; on wasm one SIMD pass per tensor,
// masked by rows or columns or not) against adamw.ts's tfjs operations (`kernels: false`) on
// the same inputs: same bits for the parameters and both moments over five steps.
describe.each(['cpu', 'wasm'] as const)('training kernels on %s', (backend) => {
  it.each([0, 0.1])('AdamW (weight decay %s): the kernels give the same bits as the tfjs ops over five steps', async (weightDecay) => {
    await selectBackend(backend);
    const rng = new Rng(7);
    // [37] and [5, 11]: not whole SIMD vectors (the JavaScript kernel); [3, 4, 4]: small; [130, 132]:
    // above FUSED_MAX_ELEMENTS (tfjs ops on cpu); the last two masked by rows and by columns.
    const shapes = [[37], [5, 11], [3, 4, 4], [130, 132], [24, 12], [12, 24]];
    const masks: (tf.Tensor | undefined)[] = [undefined, undefined, undefined, undefined,
      tf.tensor2d(Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? 0 : 1)), [24, 1]),
      tf.tensor2d(Array.from({ length: 24 }, (_, i) => (i % 5 === 1 ? 0 : 1)), [1, 24])];
    const size = (s: number[]) => s.reduce((a, b) => a * b);
    const initial = shapes.map((s) => randomArray(rng, size(s), 2));
    const fusedVars = initial.map((v, i) => tf.variable(tf.tensor(v, shapes[i]!)));
    const opsVars = initial.map((v, i) => tf.variable(tf.tensor(v, shapes[i]!)));
    const params = (vars: tf.Variable[]) => vars.map((variable, i) => ({ name: `t${i}`, variable, decay: i !== 1, ...(masks[i] ? { mask: masks[i] } : {}) }));
    const fused = new AdamW(params(fusedVars), { weightDecay });
    const ops = new AdamW(params(opsVars), { weightDecay, kernels: false });
    for (let step = 0; step < 5; step++) {
      // Gradients spanning many magnitudes (and a zero), so rounding is exercised.
      const grads = new Map(shapes.map((s, i) => [`t${i}`, tf.tensor(randomArray(rng, size(s), 10 ** (step - 3)).map((x, j) => (j === 0 ? 0 : x)), s)] as const));
      const kernels = (await tf.profile(() => fused.apply(grads, 1e-2 * (step + 1)))).kernels.map((k) => k.name);
      if (backend === 'wasm') {
        // SIMD for every tensor of whole vectors, the JavaScript kernel for the other two.
        expect(kernels.filter((k) => k === 'ApexAdamWSimd')).toHaveLength(4);
        expect(kernels.filter((k) => k === 'ApexAdamW')).toHaveLength(2);
        expect(kernels.filter((k) => k === 'Sqrt' || k === 'Select')).toHaveLength(0);
      } else {
        // The JavaScript kernel for the small unmasked tensors; tfjs ops for the large and the masked ones.
        expect(kernels.filter((k) => k === 'ApexAdamW')).toHaveLength(3);
        expect(kernels.filter((k) => k === 'Sqrt')).toHaveLength(3);
      }
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
    // The update moved every parameter (a kernel that wrote nothing would fail here), and left
    // the masked rows and columns alone (entry 0, whose gradient is always 0, aside).
    for (let i = 0; i < shapes.length; i++) expect(bits(fusedVars[i]!.dataSync() as Float32Array)).not.toEqual(bits(initial[i]!));
    const rowsAfter = fusedVars[4]!.dataSync() as Float32Array;
    const colsAfter = fusedVars[5]!.dataSync() as Float32Array;
    for (let r = 0; r < 24; r++) {
      for (let c = 0; c < 12; c++) {
        const frozen = r % 3 === 0;
        if (r * 12 + c > 0) expect(rowsAfter[r * 12 + c] === initial[4]![r * 12 + c]).toBe(frozen);
      }
    }
    for (let r = 0; r < 12; r++) {
      for (let c = 0; c < 24; c++) {
        const frozen = c % 5 === 1;
        if (r * 24 + c > 0) expect(colsAfter[r * 24 + c] === initial[5]![r * 24 + c]).toBe(frozen);
      }
    }
    fused.dispose();
    ops.dispose();
    tf.dispose([...fusedVars, ...opsVars, ...masks.filter((m): m is tf.Tensor => m !== undefined)]);
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
