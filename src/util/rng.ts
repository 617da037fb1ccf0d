/**
 * Seeded pseudo-random numbers shared by data sampling, splits, initialisation and training:
 * xoshiro128** (Blackman & Vigna) seeded through splitmix32. Only 32-bit integer arithmetic
 * (Math.imul, >>> 0), so a seed gives the same stream on every platform and Node version, and
 * the four-word state can be saved in a checkpoint and restored exactly.
 */

const TWO_POW_32 = 4294967296;

/** The largest seed a user may give: seeds are reduced to 32 bits, so a larger one would repeat a smaller one's stream. */
export const MAX_SEED = TWO_POW_32 - 1;

/** One splitmix32 step: returns the next state and a well-mixed 32-bit output. */
function splitmix32(state: number): [next: number, out: number] {
  const next = (state + 0x9e3779b9) >>> 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [next, (z ^ (z >>> 16)) >>> 0];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** Any finite number works as a seed; it is reduced to 32 bits (negative and fractional seeds included). */
  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`Rng seed must be a finite number, got ${seed}`);
    let sm = Math.trunc(seed) >>> 0;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [next, out] = splitmix32(sm);
      sm = next;
      words.push(out);
    }
    // splitmix32 is a bijection of its counter, so four consecutive outputs are never all zero
    // (xoshiro's one forbidden state).
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  /** Uniform integer in [0, n), without modulo bias (rejection sampling). n in [1, 2^32]. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) throw new RangeError(`nextInt needs an integer n in [1, 2^32], got ${n}`);
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = a[i]!;
      a[i] = a[j]!;
      a[j] = tmp;
    }
    return a;
  }

  /** The four state words, for checkpoints. */
  state(): number[] {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  /** Restores a generator saved with state(); continues the stream exactly where it was. */
  static fromState(s: number[]): Rng {
    if (!Array.isArray(s) || s.length !== 4 || s.some((w) => !Number.isInteger(w) || w < 0 || w >= TWO_POW_32)) {
      throw new RangeError(`Rng state must be four unsigned 32-bit integers, got ${JSON.stringify(s)}`);
    }
    if (s.every((w) => w === 0)) throw new RangeError('Rng state must not be all zero');
    const r = new Rng(0);
    [r.s0, r.s1, r.s2, r.s3] = s as [number, number, number, number];
    return r;
  }
}
