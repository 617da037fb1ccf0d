import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/util/rng.js';

// First outputs of xoshiro128** seeded through splitmix32, from an independent Python transcription
// of the reference C code (Blackman & Vigna) with arbitrary-precision integers masked to 32 bits.
const REFERENCE: Record<number, number[]> = {
  0: [3809008728, 1133695204, 53579671, 2891528803, 139681546, 2203266335],
  42: [2837322924, 544945897, 479756282, 3500138142, 339756180, 113173290],
  [-1]: [835879718, 1921286648, 2356205009, 1885780724, 980451116, 1053911718],
};

describe('Rng', () => {
  it('matches reference xoshiro128** outputs', () => {
    for (const [seed, expected] of Object.entries(REFERENCE)) {
      const r = new Rng(Number(seed));
      expect(expected.map(() => r.nextUint32())).toEqual(expected);
    }
  });

  it('next() is nextUint32 / 2^32, in [0, 1)', () => {
    const r = new Rng(0);
    expect(r.next()).toBe(3809008728 / 2 ** 32);
    const s = new Rng(5);
    for (let i = 0; i < 10_000; i++) {
      const x = s.next();
      expect(x >= 0 && x < 1).toBe(true);
    }
  });

  it('state round trip continues the same stream', () => {
    const a = new Rng(1234);
    for (let i = 0; i < 17; i++) a.next();
    const saved = a.state();
    const b = Rng.fromState(saved);
    const fromA = Array.from({ length: 50 }, () => a.nextInt(1000));
    const fromB = Array.from({ length: 50 }, () => b.nextInt(1000));
    expect(fromB).toEqual(fromA);
    expect(JSON.parse(JSON.stringify(saved))).toEqual(saved);
  });

  it('rejects bad states and seeds', () => {
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/all zero/);
    expect(() => Rng.fromState([1, 2, 3])).toThrow(/four/);
    expect(() => Rng.fromState([1, 2, 3, 2 ** 32])).toThrow(/four/);
    expect(() => new Rng(Number.NaN)).toThrow(/finite/);
  });

  it('nextInt covers [0, n) evenly', () => {
    const r = new Rng(7);
    const counts = new Array(6).fill(0);
    const draws = 60_000;
    for (let i = 0; i < draws; i++) counts[r.nextInt(6)]++;
    // Each count is Binomial(60000, 1/6): sd ≈ 91; 6 sd bounds make a false failure negligible.
    for (const c of counts) expect(Math.abs(c - draws / 6)).toBeLessThan(550);
    expect(() => r.nextInt(0)).toThrow();
    expect(() => r.nextInt(2.5)).toThrow();
  });

  it('shuffle is a seeded permutation', () => {
    const a = new Rng(9).shuffle(Array.from({ length: 100 }, (_, i) => i));
    const b = new Rng(9).shuffle(Array.from({ length: 100 }, (_, i) => i));
    const c = new Rng(10).shuffle(Array.from({ length: 100 }, (_, i) => i));
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
});
