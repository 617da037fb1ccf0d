// Shared by the model tests: fixtures, reference outputs, observer statistics, comparisons.
import * as tf from '@tensorflow/tfjs';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import type { LayerHooks } from '../../src/model/layer-hooks.js';
import { computeLogits, type DeferredRead, type StreamedLayerActivations } from '../../src/model/streaming-forward.js';
import { concatArrays } from '../../src/util/typed-arrays.js';
import { CheckpointWeightSource, describeCheckpoint } from '../../src/model/weight-source.js';

export type FixtureName = 'llama-mha-f32' | 'stories260K';
export const FIXTURES: readonly FixtureName[] = ['llama-mha-f32', 'stories260K'];

export interface Reference {
  sequences: Int32Array[];
  B: number;
  T: number;
  logits: Float32Array;
  targetLogprobs: Float32Array;
  headSumsq: Float32Array;
  gateSumsq: Float32Array;
  greedyIds: Int32Array;
  promptLen: number;
  meanNll: number;
}

export async function loadReference(model: FixtureName): Promise<Reference> {
  const f = await SafetensorsFile.open(`fixtures/refs/${model}/reference_outputs.safetensors`);
  try {
    const ints = async (n: string) => new Int32Array((await f.readBytes(n)).buffer);
    const ids = await ints('input_ids');
    const [B, T] = f.info('input_ids').shape as [number, number];
    return {
      sequences: Array.from({ length: B }, (_, b) => ids.slice(b * T, (b + 1) * T)),
      B,
      T,
      logits: await f.readFloat32('logits'),
      targetLogprobs: await f.readFloat32('target_logprobs'),
      headSumsq: await f.readFloat32('head_sumsq'),
      gateSumsq: await f.readFloat32('gate_act_sumsq'),
      greedyIds: await ints('greedy_ids'),
      promptLen: Number(f.metadata.prompt_len),
      meanNll: Number(f.metadata.mean_nll),
    };
  } finally {
    await f.close();
  }
}

export async function openModel(dir: string): Promise<{ checkpoint: Checkpoint; spec: ModelSpec; source: CheckpointWeightSource; warnings: string[] }> {
  const checkpoint = await Checkpoint.open(dir);
  const { spec, warnings } = describeCheckpoint(checkpoint);
  return { checkpoint, spec, source: new CheckpointWeightSource(checkpoint, spec), warnings };
}

/**
 * An observer computing, per layer and sequence, Σ over tokens and head dims of the squared
 * attention output per query head, and Σ over tokens of silu(gate)² per channel: the
 * reference's head_sumsq [L, B, H] and gate_act_sumsq [L, B, I]. The sums are read after the
 * chunk's forward (a DeferredRead), as the webgpu backend requires.
 */
export function sumsqObserver(spec: ModelSpec, B: number) {
  const L = spec.numLayers;
  const H = spec.numHeads;
  const I = spec.intermediateSize;
  const head = new Float64Array(L * B * H);
  const gate = new Float64Array(L * B * I);
  const observe = (a: StreamedLayerActivations): DeferredRead => {
    const [b, T] = a.attention.shape;
    const { layer, sequenceIndices } = a;
    return {
      tensors: [tf.sum(tf.square(tf.reshape(a.attention, [b, T, H, spec.headDim])), [1, 3]), tf.sum(tf.square(a.gate), 1)],
      consume: ([hs, gs]) => {
        sequenceIndices.forEach((seq, row) => {
          for (let h = 0; h < H; h++) head[(layer * B + seq) * H + h] = hs![row * H + h]!;
          for (let c = 0; c < I; c++) gate[(layer * B + seq) * I + c] = gs![row * I + c]!;
        });
      },
    };
  };
  return { observe, head, gate };
}

/** Largest |x| (NaN propagates). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]!);
    if (!(d <= m)) m = d;
  }
  return m;
}

/** The logits [Σ B·T·V] of a checkpoint folder on `sequences` (streaming forward), with operator or other hooks if given. */
export async function checkpointLogits(dir: string, sequences: Int32Array[], hooks?: (layer: number) => LayerHooks | undefined): Promise<Float32Array> {
  const ck = await Checkpoint.open(dir);
  try {
    const parts = await computeLogits(new CheckpointWeightSource(ck, describeCheckpoint(ck).spec), sequences, hooks ? { hooks } : {});
    return concatArrays(parts, (n) => new Float32Array(n));
  } finally {
    await ck.close();
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

/** max |a − b| / max(|b|, floor): relative error that tolerates entries near zero. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor);
    if (!(d <= m)) m = d;
  }
  return m;
}
