import { describe, expect, it } from 'vitest';
import { bf16BitsToF32Bits, decodeToFloat32, encodeFromFloat32, f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from '../../src/io/float-codec.js';

const bitsToF32 = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0]!;
const f32ToBits = (v: number) => new Uint32Array(new Float32Array([v]).buffer)[0]!;

describe('float32 → bfloat16, round to nearest even (hand-computed bit patterns)', () => {
  const cases: [string, number, number][] = [
    ['1.0 exact', 0x3f800000, 0x3f80],
    ['tie, even stays', 0x3f808000, 0x3f80],
    ['tie, odd rounds up to even', 0x3f818000, 0x3f82],
    ['just above half rounds up', 0x3f808001, 0x3f81],
    ['just below half rounds down', 0x3f807fff, 0x3f80],
    ['largest finite f32 overflows to inf', 0x7f7fffff, 0x7f80],
    ['below the overflow tie stays finite', 0x7f7f7fff, 0x7f7f],
    ['+inf', 0x7f800000, 0x7f80],
    ['-inf', 0xff800000, 0xff80],
    ['-0', 0x80000000, 0x8000],
    ['quiet NaN', 0x7fc00000, 0x7fc0],
    ['signalling NaN with low payload stays NaN', 0x7f800001, 0x7fc0],
    ['negative NaN', 0xffc00001, 0xffc0],
    ['smallest f32 subnormal rounds to +0', 0x00000001, 0x0000],
    ['subnormal tie to even (down)', 0x00008000, 0x0000],
    ['subnormal tie to even (up)', 0x00018000, 0x0002],
    ['subnormal above half', 0x00008001, 0x0001],
    ['negative tie carries into exponent', 0xbfffffff, 0xc000],
  ];
  it.each(cases)('%s', (_label, bits, expected) => {
    expect(f32BitsToBf16(bits)).toBe(expected);
  });

  it('decodes by shifting (every non-NaN pattern round-trips bit-exactly)', () => {
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const back = f32BitsToBf16(bf16BitsToF32Bits(h));
      const isNaN = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (isNaN ? (back & 0x7fc0) !== 0x7fc0 : back !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
  });
});

describe('float32 → float16, round to nearest even (hand-computed bit patterns)', () => {
  const cases: [string, number, number][] = [
    ['1.0', 0x3f800000, 0x3c00],
    ['normal tie, even stays (1 + 2^-11)', 0x3f801000, 0x3c00],
    ['normal tie, odd rounds up (1 + 3·2^-11)', 0x3f803000, 0x3c02],
    ['65504 = largest half', 0x477fe000, 0x7bff],
    ['65519 stays 65504', 0x477fef00, 0x7bff],
    ['65520 is the tie with 65536: to even = inf', 0x477ff000, 0x7c00],
    ['1e10 overflows to inf', 0x501502f9, 0x7c00],
    ['-1e10 overflows to -inf', 0xd01502f9, 0xfc00],
    ['2^-24 = smallest subnormal', 0x33800000, 0x0001],
    ['2^-25 is a tie between 0 and 2^-24: to even = 0', 0x33000000, 0x0000],
    ['just above 2^-25 rounds up to 2^-24', 0x33000001, 0x0001],
    ['1.5·2^-24 ties to 2 units', 0x33c00000, 0x0002],
    ['2.5·2^-24 ties to 2 units', 0x34200000, 0x0002],
    ['2^-14 = smallest normal', 0x38800000, 0x0400],
    ['largest subnormal + half unit (2^-14 - 2^-25) ties up into the normals', 0x387fe000, 0x0400],
    ['f32 subnormal → +0', 0x00000001, 0x0000],
    ['negative tiny → -0', 0x80000001, 0x8000],
    ['-0', 0x80000000, 0x8000],
    ['+inf', 0x7f800000, 0x7c00],
    ['-inf', 0xff800000, 0xfc00],
    ['quiet NaN', 0x7fc00000, 0x7e00],
  ];
  it.each(cases)('%s', (_label, bits, expected) => {
    expect(f32BitsToF16(bits)).toBe(expected);
  });

  it('agrees with an independent rounding of the exact value for 20k random floats in range', () => {
    // Reference: exact rational arithmetic on the f32 value (doubles hold it exactly).
    let x = 12345;
    const bad: string[] = [];
    for (let i = 0; i < 20000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const bits = ((x & 0x807fffff) | ((((x >>> 23) & 0x1f) + 100) << 23)) >>> 0; // exponents 2^-27 .. 2^4
      const got = f32BitsToF16(bits);
      const want = referenceF16(bitsToF32(bits));
      if (got !== want) bad.push(`${bits.toString(16)}: ${got.toString(16)} vs ${want.toString(16)}`);
    }
    expect(bad).toEqual([]);
  });

  it('decodes every half exactly; every non-NaN half round-trips', () => {
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(Number.isNaN(f16BitsToF32(0x7e00))).toBe(true);
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const back = f32BitsToF16(f32ToBits(f16BitsToF32(h)));
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN ? (back & 0x7e00) !== 0x7e00 : back !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
  });
});

/** Round-to-nearest-even onto the half grid, written from the definition. */
function referenceF16(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  const quantum = a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
  const q = a / quantum;
  let n = Math.floor(q);
  const frac = q - n;
  if (frac > 0.5 || (frac === 0.5 && n % 2 === 1)) n += 1;
  const r = n * quantum;
  if (r >= 65520) return sign | 0x7c00;
  if (r < 2 ** -14) return sign | n;
  const e = Math.floor(Math.log2(r));
  return sign | ((e + 15) << 10) | Math.round((r / 2 ** e - 1) * 1024);
}

describe('encode/decode of whole arrays', () => {
  it('F32, F16 and BF16 arrays round-trip bit-exactly through their bytes', () => {
    const f32 = new Float32Array([1, -2.5, 3.25e-5, 65504, -0, Infinity, 1e-40]);
    expect([...decodeToFloat32(encodeFromFloat32(f32, 'F32'), 'F32', 't')]).toEqual([...f32]);
    for (const dtype of ['F16', 'BF16'] as const) {
      const once = decodeToFloat32(encodeFromFloat32(f32, dtype), dtype, 't');
      const twice = decodeToFloat32(encodeFromFloat32(once, dtype), dtype, 't');
      expect(new Uint32Array(twice.buffer)).toEqual(new Uint32Array(once.buffer));
    }
  });

  it('decodes unaligned F32/BF16 data by copying', () => {
    const buf = new Uint8Array(9);
    buf.set(new Uint8Array(new Float32Array([1.5, -3]).buffer), 1);
    expect([...decodeToFloat32(buf.subarray(1), 'F32', 't')]).toEqual([1.5, -3]);
    const b = new Uint8Array(5);
    b.set([0x80, 0x3f, 0x40, 0xc0], 1);
    expect([...decodeToFloat32(b.subarray(1), 'BF16', 't')]).toEqual([1, -3]);
  });
});
