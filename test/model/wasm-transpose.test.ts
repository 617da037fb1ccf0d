// The wasm backend's Transpose of the last two axes in SIMD tiles (wasm-transpose.ts) against
// the cpu backend's and a plain loop: exact bits for every shape class (multiples of 4, row or
// column remainders, fewer than 4 rows or columns, batches), float32 and int32; other
// permutations and small tensors keep tfjs's kernel.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { transposeMatrix } from '../../src/model/wasm-transpose.js';
import { wasmApi, type WasmMemory } from '../../src/ops/wasm-encoding.js';
import { Rng } from '../../src/util/rng.js';

function plainTranspose(values: Int32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

describe('transposeMatrix (SIMD tiles on a WebAssembly memory)', () => {
  const memory = new (wasmApi.Memory as unknown as new (d: { initial: number }) => WasmMemory)({ initial: 64 });
  it.each([[4, 4], [8, 12], [1, 9], [3, 3], [5, 4], [4, 7], [67, 131], [130, 65], [64, 256], [256, 64], [9, 200]])('%i × %i: every bit in place', (rows, cols) => {
    const rng = new Rng(rows * 1000 + cols);
    // Any 32-bit patterns, NaN payloads of float32 included.
    const values = Int32Array.from({ length: rows * cols }, () => (rng.nextInt(2 ** 31) - 2 ** 30) * 2 + 1);
    const src = 64;
    const dst = src + 4 * rows * cols + 64;
    const heap = new Int32Array(memory.buffer);
    heap.fill(-7, 0, (dst >> 2) + rows * cols + 16);
    heap.set(values, src >> 2);
    transposeMatrix(memory, src, dst, rows, cols);
    expect(Array.from(heap.subarray(dst >> 2, (dst >> 2) + rows * cols))).toEqual(Array.from(plainTranspose(values, rows, cols)));
    // Nothing written past the output or over the input.
    expect(heap[(dst >> 2) + rows * cols]).toBe(-7);
    expect(Array.from(heap.subarray(src >> 2, (src >> 2) + rows * cols))).toEqual(Array.from(values));
  });
});

describe('the wasm Transpose kernel', () => {
  const cases: [number[], number[], 'float32' | 'int32'][] = [
    [[256, 688], [1, 0], 'float32'],
    [[131, 67], [1, 0], 'float32'],
    [[2, 4, 130, 33], [0, 1, 3, 2], 'float32'],
    [[3, 70, 90], [0, 2, 1], 'int32'],
    [[2, 4, 128, 32], [0, 2, 1, 3], 'float32'], // not the last two axes: tfjs's kernel
    [[5, 7], [1, 0], 'float32'], // small: tfjs's kernel
  ];
  it.each(cases)('%j perm %j (%s) equals the cpu backend bit for bit', async (shape, perm, dtype) => {
    const rng = new Rng(shape.reduce((a, b) => a * b, 1));
    const n = shape.reduce((a, b) => a * b, 1);
    const values = dtype === 'int32' ? Int32Array.from({ length: n }, () => rng.nextInt(1 << 30) - (1 << 29)) : Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
    const results: Uint32Array[] = [];
    for (const backend of ['cpu', 'wasm'] as const) {
      await selectBackend(backend);
      const x = tf.tensor(values, shape, dtype);
      const y = tf.transpose(x, perm);
      expect(y.shape).toEqual(perm.map((p) => shape[p]));
      const data = await y.data();
      results.push(new Uint32Array(data.buffer, data.byteOffset, data.length).slice());
      tf.dispose([x, y]);
    }
    expect(Array.from(results[1]!)).toEqual(Array.from(results[0]!));
  });
});
