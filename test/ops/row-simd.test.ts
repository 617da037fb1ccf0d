// The SIMD row passes (row-simd.ts) on a memory of their own, against hand-computed values:
// only the listed rows change, in the listed order, scaled and shifted as stated; the dot
// products equal the float64 sums of the float32 products.
import { describe, expect, it } from 'vitest';
import { kernelIo } from '../../src/ops/js-kernel-io.js';
import { rowSimd, rowSimdSupports } from '../../src/ops/row-simd.js';
import type { WasmMemory } from '../../src/ops/wasm-encoding.js';

const memory = new (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => WasmMemory } }).WebAssembly.Memory({ initial: 1 });
const f32 = () => new Float32Array(memory.buffer);
const i32 = () => new Int32Array(memory.buffer);
const C = 8;
const R = 5;
// Byte addresses of the operands (rows of C float32 = 32 bytes).
const SRC = 0;
const OUT = 1024;
const ADD = 2048;
const COEF = 3072;
const LINES = 3200;
const DOTS = 3300;

function setUp(): void {
  f32().fill(0);
  for (let i = 0; i < R * C; i++) f32()[SRC / 4 + i] = 0.5 * i + 1;
  for (let i = 0; i < 2 * C; i++) f32()[ADD / 4 + i] = 100 + i;
  f32().set([2, -1], COEF / 4);
  i32().set([3, 1], LINES / 4);
}
const row = (at: number, r: number) => Array.from(f32().subarray(at / 4 + r * C, at / 4 + (r + 1) * C));

describe('row SIMD passes', () => {
  const rs = rowSimd(memory);

  it('scaleAddRows: out[lines_i] = coef_i · src[lines_i] + add_i, other rows untouched', () => {
    setUp();
    rs.scaleAddRows(OUT, SRC, ADD, COEF, LINES, 2, C);
    expect(row(OUT, 3)).toEqual(row(SRC, 3).map((x, c) => 2 * x + 100 + c));
    expect(row(OUT, 1)).toEqual(row(SRC, 1).map((x, c) => -x + 100 + C + c));
    for (const r of [0, 2, 4]) expect(row(OUT, r)).toEqual(new Array(C).fill(0));
  });

  it('scaleRows: out[lines_i] = coef_i · src[lines_i]; k = 0 writes nothing', () => {
    setUp();
    rs.scaleRows(OUT, SRC, COEF, LINES, 2, C);
    expect(row(OUT, 3)).toEqual(row(SRC, 3).map((x) => 2 * x));
    expect(row(OUT, 1)).toEqual(row(SRC, 1).map((x) => -x));
    setUp();
    rs.scaleRows(OUT, SRC, COEF, LINES, 0, C);
    expect(f32().subarray(OUT / 4, OUT / 4 + R * C).every((x) => x === 0)).toBe(true);
  });

  it('dotRows: float64 sums of the rows’ float32 products', () => {
    setUp();
    for (let i = 0; i < R * C; i++) f32()[OUT / 4 + i] = Math.fround(1 / (i + 3));
    rs.dotRows(DOTS, SRC, OUT, LINES, 2, C);
    [3, 1].forEach((r, i) => {
      const a = row(SRC, r);
      const b = row(OUT, r);
      const want = Math.fround(a.reduce((s, x, c) => s + Math.fround(x * b[c]!), 0));
      expect(f32()[DOTS / 4 + i]).toBe(want);
    });
  });

  it('takes whole vectors only', () => {
    expect([4, 8, 256].map(rowSimdSupports)).toEqual([true, true, true]);
    expect([0, 1, 6, 258].map(rowSimdSupports)).toEqual([false, false, false, false]);
  });
});

describe('kernelIo on wasm', () => {
  const backend = (m: WasmMemory | undefined) => ({ wasm: { asm: { memory: m } }, dataIdMap: { get: () => ({ memoryOffset: 64 }) }, makeOutput: () => undefined, typedArrayFromHeap: () => undefined, disposeData: () => undefined });
  const WA = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory } }).WebAssembly;

  it('offers the SIMD passes on a plain memory, with tensor addresses from the backend', () => {
    const io = kernelIo('wasm', backend(new WA.Memory({ initial: 1 })));
    expect(io.simd).toBeDefined();
    expect(io.simd!.address({ dataId: {}, shape: [1], dtype: 'float32' })).toBe(64);
  });

  it('falls back to the JavaScript loops on a shared memory (multi-threaded tfjs-wasm) or none', () => {
    expect(kernelIo('wasm', backend(new WA.Memory({ initial: 1, maximum: 2, shared: true }))).simd).toBeUndefined();
    expect(kernelIo('wasm', backend(undefined)).simd).toBeUndefined();
  });
});
