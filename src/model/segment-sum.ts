/**
 * The arithmetic of UnsortedSegmentSum (the gradient of gather) shared by apex's cpu and wasm
 * kernels: out[s, :] += x[i, :] for every row i whose id s lies in [0, numSegments); other ids
 * are dropped, as in TensorFlow. `out` must be zero-filled by the caller.
 */
export function accumulateSegments(
  xs: ArrayLike<number>,
  ids: ArrayLike<number>,
  rows: number,
  inner: number,
  numSegments: number,
  out: Float32Array | Int32Array,
): void {
  for (let i = 0; i < rows; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j]! += xs[src + j]!;
  }
}
