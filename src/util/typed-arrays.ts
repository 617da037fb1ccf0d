/** Typed-array helpers shared across modules. */

/** The parts one after another in a new array made by `make(totalLength)`. */
export function concatArrays<T extends Int32Array | Float32Array | Uint8Array>(parts: readonly T[], make: (length: number) => T): T {
  const out = make(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
