/**
 * Produces the bytes of one tensor `apex expand` changes: start from the trained F32 copy when
 * there is one, else the input decoded to float32; apply the layer's operators by the tensor's
 * rule (fusion.ts, float32); encode once to the output dtype with round-to-nearest-even. A NaN
 * or Inf anywhere — in the input, created by fusion, or created by the encoding (a value beyond
 * the output dtype's range) — fails with a VerificationError naming the tensor, the element and
 * where it came from, so nothing non-finite is ever written.
 */
import { VerificationError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { DType } from '../io/dtype.js';
import { encodeFromFloat32 } from '../io/float-codec.js';
import type { ModelSpec } from '../model/model-spec.js';
import { fuseLayerTensor } from '../ops/fusion.js';
import type { LayerOperators } from '../ops/operator-init.js';
import type { PlannedTensor } from './expand-plan.js';
import type { TrainedUpdates } from './expand-updates.js';

export interface TensorSources {
  readonly input: Checkpoint;
  readonly updates?: TrainedUpdates;
  readonly operatorsOf: ReadonlyMap<number, LayerOperators>;
  readonly spec: ModelSpec;
}

export async function produceTensor(t: PlannedTensor, src: TensorSources): Promise<Uint8Array> {
  const values = await readSource(t, src);
  if (t.fused) fuseLayerTensor(t.fused, values, src.operatorsOf.get(t.fused.layer)!, src.spec);
  const bytes = encodeFromFloat32(values, t.outDtype);
  // One pass over the encoded bits finds every NaN/Inf: a non-finite input element stays
  // non-finite through fusion (it is only scaled and added to) and through the encoding, and
  // so does one that fusion creates. Only then are the values searched for where it came from.
  const bad = firstNonFiniteEncoded(bytes, t.outDtype);
  if (bad >= 0) throw await diagnoseNonFinite(t, src, values, bad);
  return bytes;
}

async function readSource(t: PlannedTensor, src: TensorSources): Promise<Float32Array> {
  return t.reasons.includes('update') ? src.updates!.readFloat32(t.name) : src.input.readFloat32(t.name);
}

/** The error for a non-finite element at `encodedIndex` of the encoding of `values`: input, fusion or range. */
async function diagnoseNonFinite(t: PlannedTensor, src: TensorSources, values: Float32Array, encodedIndex: number): Promise<VerificationError> {
  const origin = t.reasons.includes('update') ? `the trained copy in ${src.updates!.path}` : 'the input';
  const source = await readSource(t, src);
  const before = firstNonFinite(source);
  if (before >= 0) return nonFinite(t.name, before, source[before]!, origin);
  const after = firstNonFinite(values);
  if (after >= 0) return nonFinite(t.name, after, values[after]!, 'fusion (operator values too large for float32?)');
  return new VerificationError(`tensor '${t.name}': element ${encodedIndex} (${values[encodedIndex]}) does not fit in ${t.outDtype} and would become Inf; nothing was written`, 'NON_FINITE');
}

function nonFinite(name: string, index: number, value: number, origin: string): VerificationError {
  return new VerificationError(`tensor '${name}': element ${index} is ${value} (from ${origin}); refusing to write a non-finite weight, nothing was written`, 'NON_FINITE');
}

/** Index of the first NaN or ±Inf, or −1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v - v !== 0) return i; // NaN − NaN and Inf − Inf are NaN
  }
  return -1;
}

/** Index of the first element whose encoded bits are Inf or NaN (exponent all ones), or −1. */
export function firstNonFiniteEncoded(bytes: Uint8Array, dtype: DType): number {
  if (dtype === 'BF16' || dtype === 'F16') {
    const mask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
    const n = bytes.byteLength / 2;
    const h = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer);
    for (let i = 0; i < n; i++) if ((h[i]! & mask) === mask) return i;
    return -1;
  }
  if (dtype === 'F32') return firstNonFinite(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
  if (dtype === 'F64') {
    const f = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
    for (let i = 0; i < f.length; i++) if (!Number.isFinite(f[i]!)) return i;
    return -1;
  }
  return -1;
}
