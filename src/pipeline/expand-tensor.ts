/**
 * Produces the bytes of one tensor `apex expand` changes: start from the trained F32 copy when
 * there is one, else the input decoded to float32; apply the layer's operators by the tensor's
 * rule (fusion.ts, float32); encode once to the output dtype with round-to-nearest-even. A NaN
 * or Inf anywhere fails with a VerificationError naming the tensor, so nothing non-finite is
 * ever written: in the values read (input or trained copy) by the shared load check
 * (finite-check.ts, naming the file), created by fusion or by the encoding (a value beyond the
 * output dtype's range) by one pass over the encoded bits, naming the element and the cause.
 */
import { join } from 'node:path';
import { VerificationError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { DTYPE_BITS, type DType } from '../io/dtype.js';
import { decodeToFloat32, encodeFromFloat32 } from '../io/float-codec.js';
import { assertFinite, firstNonFinite } from '../model/finite-check.js';
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
  /** Where the bytes are read (see TensorScratch). */
  readonly scratch: TensorScratch;
}

/**
 * One buffer, reused for every computed tensor, that its stored bytes are read into (and that
 * holds its float32 values when they are F32, as trained copies always are). A fresh buffer per
 * tensor is garbage as soon as the writer has copied the tensor, but V8 frees such external
 * memory lazily, so the garbage of many tensors piled up: the peak grew with the checkpoint
 * (about 50 MB of dead tensor and hashing buffers for a 40 MB f32 model). Sized once for the
 * largest computed tensor; the bytes of one tensor are valid until the next is read, which is
 * after the writer has taken them.
 */
export class TensorScratch {
  private buffer: ArrayBuffer;

  constructor(bytes: number) {
    this.buffer = new ArrayBuffer(bytes);
  }

  /** The first `length` bytes (the buffer grows when a tensor is larger than planned). */
  bytes(length: number): Uint8Array {
    if (this.buffer.byteLength < length) this.buffer = new ArrayBuffer(length);
    return new Uint8Array(this.buffer, 0, length);
  }
}

export async function produceTensor(t: PlannedTensor, src: TensorSources): Promise<Uint8Array> {
  const values = await readSource(t, src);
  if (t.fused) fuseLayerTensor(t.fused, values, src.operatorsOf.get(t.fused.layer)!, src.spec);
  const bytes = encodeFromFloat32(values, t.outDtype);
  // One pass over the encoded bits finds every NaN/Inf: a non-finite input element stays
  // non-finite through fusion (it is only scaled and added to) and through the encoding, and
  // so does one that fusion creates. Only then are the values searched for where it came from.
  const bad = firstNonFiniteEncoded(bytes, t.outDtype);
  if (bad >= 0) throw diagnoseNonFinite(t, values, bad);
  return bytes;
}

/**
 * The values the tensor starts from, refused when they hold NaN/Inf (naming the file): its
 * stored bytes read into the scratch buffer, viewed as float32 when F32, else decoded.
 */
async function readSource(t: PlannedTensor, src: TensorSources): Promise<Float32Array> {
  const numel = t.shape.reduce((p, d) => p * d, 1);
  if (t.reasons.includes('update')) {
    const bytes = src.scratch.bytes(numel * 4);
    await src.updates!.readInto(t.updateFrom ?? t.name, bytes);
    const values = new Float32Array(bytes.buffer, 0, numel);
    assertFinite(values, t.updateFrom ?? t.name, src.updates!.path);
    return values;
  }
  const bytes = src.scratch.bytes((numel * DTYPE_BITS[t.inDtype]) / 8);
  await src.input.readInto(t.name, 0, bytes);
  const values = decodeToFloat32(bytes, t.inDtype, `${src.input.dir}:${t.name}`);
  assertFinite(values, t.name, join(src.input.dir, src.input.info(t.name).file));
  return values;
}

/** The error for a non-finite element at `encodedIndex` of the encoding of finite inputs: fusion or range. */
function diagnoseNonFinite(t: PlannedTensor, values: Float32Array, encodedIndex: number): VerificationError {
  const after = firstNonFinite(values);
  if (after >= 0) {
    return new VerificationError(`tensor '${t.name}': element ${after} is ${values[after]} (from fusion: operator values too large for float32?); refusing to write a non-finite weight, nothing was written`, 'NON_FINITE');
  }
  return new VerificationError(`tensor '${t.name}': element ${encodedIndex} (${values[encodedIndex]}) does not fit in ${t.outDtype} and would become Inf; nothing was written`, 'NON_FINITE');
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
