/**
 * Rotary position embeddings as Hugging Face transformers computes them: inverse frequencies
 * for the default, linear and llama3 rope types, cos/sin tables in float32 (transformers
 * forces float32 for them even when the model runs in float64), and the half-split
 * `rotate_half` convention (pairs (j, j + dh/2)).
 */
import * as tf from '@tensorflow/tfjs';
import { onWebgpu } from '../ops/webgpu-programs.js';
import type { RopeSpec } from './model-spec.js';
import { rotaryHeadsWebgpu } from './webgpu-layer-kernels.js';

const f = Math.fround;

/**
 * inv_freq[j] = 1 / θ^(2j/dh), j < dh/2, then the rope type's rescaling. Each step is rounded
 * to float32 the way the torch tensor arithmetic in transformers' rope init functions does.
 */
export function ropeInverseFrequencies(rope: RopeSpec, headDim: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) inv[j] = f(1 / f(Math.pow(rope.theta, f(f(2 * j) / headDim))));
  if (rope.type === 'linear') {
    for (let j = 0; j < half; j++) inv[j] = f(inv[j]! / f(rope.factor!));
  } else if (rope.type === 'llama3') {
    // torch does this arithmetic on float32 tensors, with Python scalars cast to float32.
    const factor = f(rope.factor!);
    const low = f(rope.lowFreqFactor!);
    const oldLen = f(rope.originalMaxPositionEmbeddings!);
    const lowFreqWavelen = f(rope.originalMaxPositionEmbeddings! / rope.lowFreqFactor!);
    const highFreqWavelen = f(rope.originalMaxPositionEmbeddings! / rope.highFreqFactor!);
    const twoPi = f(2 * Math.PI);
    const highMinusLow = f(rope.highFreqFactor! - rope.lowFreqFactor!);
    for (let j = 0; j < half; j++) {
      const x = inv[j]!;
      const wavelen = f(twoPi / x);
      let scaled = wavelen > lowFreqWavelen ? f(x / factor) : x;
      const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
      if (isMedium) {
        const smooth = f(f(f(oldLen / wavelen) - low) / highMinusLow);
        scaled = f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
      }
      inv[j] = scaled;
    }
  }
  return inv;
}

/** cos/sin tables [length, dh] for positions start..start+length-1: emb = cat(freqs, freqs). */
export function ropeTables(inv: Float32Array, start: number, length: number): { cos: Float32Array; sin: Float32Array } {
  const half = inv.length;
  const dh = 2 * half;
  const cos = new Float32Array(length * dh);
  const sin = new Float32Array(length * dh);
  for (let t = 0; t < length; t++) {
    const pos = start + t;
    for (let j = 0; j < half; j++) {
      const angle = f(inv[j]! * pos);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[t * dh + j] = c;
      cos[t * dh + half + j] = c;
      sin[t * dh + j] = s;
      sin[t * dh + half + j] = s;
    }
  }
  return { cos, sin };
}

/** The tables as tensors, ready for applyRotary; positions start..start+length-1. */
export interface RopeTensors {
  readonly cos: tf.Tensor2D;
  /** sin with the rotate_half sign folded in: [-sin (first half), +sin (second half)]. */
  readonly signedSin: tf.Tensor2D;
}

export function ropeTensors(inv: Float32Array, start: number, length: number): RopeTensors {
  const { cos, sin } = ropeTables(inv, start, length);
  const half = inv.length;
  const dh = 2 * half;
  for (let t = 0; t < length; t++) for (let j = 0; j < half; j++) sin[t * dh + j] = -sin[t * dh + j]!;
  return { cos: tf.tensor2d(cos, [length, dh]), signedSin: tf.tensor2d(sin, [length, dh]) };
}

/**
 * x·cos + rotate_half(x)·sin for x [B, n, T, dh], where rotate_half(x) = cat(-x2, x1); written
 * as x·cos + cat(x2, x1)·signedSin so it is one swap, two multiplies and an add.
 */
export function applyRotary(x: tf.Tensor4D, rope: RopeTensors): tf.Tensor4D {
  const dh = x.shape[3];
  const half = dh / 2;
  const [x1, x2] = tf.split(x, [half, half], 3);
  const swapped = tf.concat([x2!, x1!], 3);
  return tf.add(tf.mul(x, rope.cos), tf.mul(swapped, rope.signedSin));
}

/**
 * A q or k projection x [B, T, n·dh] as n rotated heads [B, n, T, dh]: the heads' transpose, then
 * applyRotary. On webgpu both in one program of apex's own (webgpu-layer-kernels.ts).
 */
export function rotaryHeads(x: tf.Tensor3D, heads: number, rope: RopeTensors): tf.Tensor4D {
  if (onWebgpu()) return rotaryHeadsWebgpu(x, heads, rope.cos, rope.signedSin);
  const [B, T, width] = x.shape;
  return applyRotary(tf.transpose(tf.reshape(x, [B, T, heads, width / heads]), [0, 2, 1, 3]) as tf.Tensor4D, rope);
}
