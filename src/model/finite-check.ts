/**
 * The numerical guard on weights as they are read: a NaN or ±Inf in a tensor a command computes
 * with fails the command (VerificationError, exit 6) naming the tensor and its file, instead of
 * surfacing later as a NaN loss or activation that names neither. Every checkpoint read that
 * feeds a computation goes through `readFiniteFloat32` / `readFiniteRowsFloat32`; the check
 * runs on the decoded float32 values, so BF16/F16 NaN and Inf are caught the same way.
 */
import { join } from 'node:path';
import { VerificationError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint.js';

/** Index of the first NaN or ±Inf, or −1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v - v !== 0) return i; // NaN − NaN and Inf − Inf are NaN; every finite v gives 0
  }
  return -1;
}

/**
 * Throws unless every value is finite. `tensor` names what was read (a tensor name, with the
 * rows when only some were read), `file` where it was read from; `offset` is the flat index of
 * `values[0]` in the tensor, so the reported index is the tensor's own.
 */
export function assertFinite(values: Float32Array, tensor: string, file: string, offset = 0): void {
  const found = describeNonFinite(values, offset);
  if (found === undefined) return;
  throw new VerificationError(`${tensor} in ${file}: ${found}; apex does not compute with NaN/Inf weights`, 'NON_FINITE');
}

/**
 * `3 non-finite values (first at index 17: NaN)`, or undefined when every value is finite.
 * `offset` is the flat index of `values[0]` in the tensor.
 */
export function describeNonFinite(values: ArrayLike<number>, offset = 0): string | undefined {
  const first = firstNonFinite(values);
  if (first < 0) return undefined;
  let count = 0;
  for (let i = first; i < values.length; i++) {
    const v = values[i]!;
    if (v - v !== 0) count++;
  }
  return `${count} non-finite value${count === 1 ? '' : 's'} (first at index ${offset + first}: ${nonFiniteName(values[first]!)})`;
}

function nonFiniteName(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  return v > 0 ? 'Inf' : '-Inf';
}

/** The file a checkpoint tensor is stored in (its shard's path). */
function fileOf(checkpoint: Checkpoint, name: string): string {
  return join(checkpoint.dir, checkpoint.info(name).file);
}

/** A whole tensor decoded to float32, refused when it holds NaN or Inf. */
export async function readFiniteFloat32(checkpoint: Checkpoint, name: string): Promise<Float32Array> {
  const values = await checkpoint.readFloat32(name);
  assertFinite(values, name, fileOf(checkpoint, name));
  return values;
}

/** Rows [rowStart, rowEnd) of a tensor decoded to float32, refused when they hold NaN or Inf. */
export async function readFiniteRowsFloat32(checkpoint: Checkpoint, name: string, rowStart: number, rowEnd: number): Promise<Float32Array> {
  const values = await checkpoint.readRowsFloat32(name, rowStart, rowEnd);
  const rowLength = values.length / Math.max(1, rowEnd - rowStart);
  assertFinite(values, `${name} (rows ${rowStart}..${rowEnd - 1})`, fileOf(checkpoint, name), rowStart * rowLength);
  return values;
}
