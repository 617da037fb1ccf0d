/**
 * Conversions between float32 and the stored float dtypes (F16, BF16, F64), with
 * round-to-nearest-even on the way down. NaN payloads are kept where the format allows.
 */
import { InputError } from '../errors.js';
import type { DType } from './dtype.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 bits → bfloat16 bits, round-to-nearest-even; NaN stays NaN (quiet bit set). */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    return ((bits >>> 16) | 0x0040) & 0xffff;
  }
  const lsb = (bits >>> 16) & 1;
  return ((bits + 0x7fff + lsb) >>> 16) & 0xffff;
}

export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

/** float32 bits → IEEE half bits, round-to-nearest-even, subnormals and overflow to inf. */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    return sign | 0x7e00 | (mant >>> 13); // quiet NaN, keep top payload bits
  }
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // too small even for a subnormal (rounds to zero)
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let out = mant >>> shift;
    if (rest > half || (rest === half && (out & 1) === 1)) out += 1;
    return sign | out;
  }
  let out = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (out & 1) === 1)) out += 1; // may carry into exponent: correct
  return sign | out;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) {
    if (mant === 0) return sign * Infinity;
    u32[0] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13);
    return f32[0]!;
  }
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Decodes raw little-endian bytes of a float dtype to a new or aliased Float32Array. */
export function decodeToFloat32(bytes: Uint8Array, dtype: DType, what: string): Float32Array {
  switch (dtype) {
    case 'F32': {
      if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      return new Float32Array(bytes.slice().buffer);
    }
    case 'BF16': {
      const n = bytes.byteLength / 2;
      const out = new Float32Array(n);
      const ob = new Uint32Array(out.buffer);
      if (bytes.byteOffset % 2 === 0) {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) ob[i] = src[i]! << 16;
      } else {
        for (let i = 0; i < n; i++) ob[i] = (bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16;
      }
      return out;
    }
    case 'F16': {
      const n = bytes.byteLength / 2;
      const out = new Float32Array(n);
      const table = f16Table();
      for (let i = 0; i < n; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
      return out;
    }
    case 'F64': {
      const n = bytes.byteLength / 8;
      const src = bytes.byteOffset % 8 === 0 ? new Float64Array(bytes.buffer, bytes.byteOffset, n) : new Float64Array(bytes.slice().buffer);
      return Float32Array.from(src);
    }
    default:
      throw new InputError(`${what}: dtype ${dtype} cannot be decoded to float32`, 'UNSUPPORTED_DTYPE');
  }
}

let f16Lut: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16BitsToF32(h);
  }
  return f16Lut;
}

/** Encodes float32 values to the stored dtype's little-endian bytes (one rounding, RNE). */
export function encodeFromFloat32(values: Float32Array, dtype: DType): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case 'BF16': {
      const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
      const out = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = f32BitsToBf16(src[i]!);
      return new Uint8Array(out.buffer);
    }
    case 'F16': {
      const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
      const out = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) out[i] = f32BitsToF16(src[i]!);
      return new Uint8Array(out.buffer);
    }
    case 'F64':
      return new Uint8Array(Float64Array.from(values).buffer);
    default:
      throw new InputError(`cannot encode float32 values as ${dtype}`, 'UNSUPPORTED_DTYPE');
  }
}
