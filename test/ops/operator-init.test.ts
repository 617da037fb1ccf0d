import { describe, expect, it } from 'vitest';
import { initChannelOperator, initHeadOperator, initLayerOperators } from '../../src/ops/operator-init.js';
import type { Selection } from '../../src/ops/selection.js';
import { Rng } from '../../src/util/rng.js';

const sel = (P: number[], N: number[], E: number[] = []): Selection => ({ P: Int32Array.from(P), N: Int32Array.from(N), E: Int32Array.from(E) });

describe('operator initialisation', () => {
  it('head operator: n = k·d_h, B1 in (−1/bs, 1/bs), B2 = 0, a = b = 1', () => {
    const op = initHeadOperator(sel([3, 1], [0, 2], [4]), 8, new Rng(1));
    expect([op.nb, op.bs]).toEqual([4, 4]); // n = 16
    expect(op.B1.length).toBe(64);
    expect(op.B2).toEqual(new Float32Array(64));
    expect(op.a).toEqual(new Float32Array(16).fill(1));
    expect(op.bV).toEqual(new Float32Array(16).fill(1));
    expect(Array.from(op.P)).toEqual([3, 1]);
    expect(Array.from(op.N)).toEqual([0, 2]);
    expect(Array.from(op.E!)).toEqual([4]);
    for (const v of op.B1) expect(Math.abs(v)).toBeLessThan(0.25);
    expect(op.B1.some((v) => v !== 0)).toBe(true);
  });

  it('channel operator: n = k, its own b for gate and up, no E when empty', () => {
    const op = initChannelOperator(sel([5, 4, 3, 2, 1, 0], [6, 7, 8, 9, 10, 11]), new Rng(1));
    expect([op.nb, op.bs]).toEqual([2, 3]);
    expect(op.B1.length).toBe(18);
    expect(op.bGate).toEqual(new Float32Array(6).fill(1));
    expect(op.bUp).toEqual(new Float32Array(6).fill(1));
    expect(op.E).toBeUndefined();
  });

  it('B1 is seeded and spans the interval', () => {
    const a = initChannelOperator(sel(Array.from({ length: 64 }, (_, i) => i), Array.from({ length: 64 }, (_, i) => 64 + i)), new Rng(9));
    const b = initChannelOperator(sel(Array.from({ length: 64 }, (_, i) => i), Array.from({ length: 64 }, (_, i) => 64 + i)), new Rng(9));
    const c = initChannelOperator(sel(Array.from({ length: 64 }, (_, i) => i), Array.from({ length: 64 }, (_, i) => 64 + i)), new Rng(10));
    expect(a.B1).toEqual(b.B1);
    expect(a.B1).not.toEqual(c.B1);
    const limit = 1 / a.bs; // n = 64 → nb = bs = 8
    expect(Math.min(...a.B1)).toBeLessThan(-0.9 * limit);
    expect(Math.max(...a.B1)).toBeGreaterThan(0.9 * limit);
    for (const v of a.B1) expect(Math.abs(v)).toBeLessThan(limit);
  });

  it('a layer gets operators only for non-empty selections', () => {
    const rng = new Rng(2);
    const l = initLayerOperators(3, { heads: sel([], []), channels: sel([1], [0]) }, 8, rng);
    expect(l.layer).toBe(3);
    expect(l.attn).toBeUndefined();
    expect(l.mlp?.B1.length).toBe(1);
    expect(() => initHeadOperator(sel([1, 2], [0]), 8, rng)).toThrow(RangeError);
  });
});
