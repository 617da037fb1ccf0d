// Shared by the expand tests: fixture copies (float32 or bf16, with planted signed zeros and NaN
// payloads), operators from real selections, random non-zero operators, operator and update files.
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import type { TrainingSetting } from '../../src/ops/operator-file.js';
import { join } from 'node:path';
import { Checkpoint } from '../../src/io/checkpoint.js';
import type { DType } from '../../src/io/dtype.js';
import { encodeFromFloat32 } from '../../src/io/float-codec.js';
import { listModelFiles } from '../../src/io/model-files.js';
import { writeSafetensors, type TensorToWrite } from '../../src/io/safetensors-writer.js';
import { indexJson, planShards } from '../../src/io/shard-plan.js';
import { expectedTensors } from '../../src/model/architecture.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { writeOperatorFile } from '../../src/ops/operator-file.js';
import { initLayerOperators, type ChannelOperator, type HeadOperator, type LayerOperators } from '../../src/ops/operator-init.js';
import { selectModel } from '../../src/ops/selection.js';
import { Rng } from '../../src/util/rng.js';

export type FixtureName = 'llama-mha-f32' | 'stories260K';

export async function fixtureSpec(name: FixtureName): Promise<ModelSpec> {
  return parseModelConfig(JSON.parse(await readFile(`fixtures/${name}/config.json`, 'utf8')) as Record<string, unknown>, name);
}

/**
 * Copies a fixture into `dir` with every tensor stored as `dtype`; `plant` may then overwrite
 * raw elements (index → 16/32-bit pattern) of named tensors, e.g. signed zeros and NaN payloads.
 */
export async function copyFixture(name: FixtureName, dir: string, dtype: 'F32' | 'BF16', plant: ReadonlyMap<string, ReadonlyMap<number, number>> = new Map()): Promise<void> {
  await mkdir(dir, { recursive: true });
  const src = await Checkpoint.open(`fixtures/${name}`);
  try {
    const tensors: TensorToWrite[] = [];
    for (const t of src.tensors()) {
      const bytes = encodeFromFloat32(Float32Array.from(await src.readFloat32(t.name)), dtype);
      const patch = plant.get(t.name);
      if (patch) {
        const view = dtype === 'BF16' ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
        for (const [i, bits] of patch) view[i] = bits;
      }
      tensors.push({ name: t.name, dtype, shape: t.shape, data: bytes });
    }
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    for (const f of await listModelFiles(src.dir)) await copyFile(join(src.dir, f), join(dir, f));
  } finally {
    await src.close();
  }
}

/** Fresh (identity) operators for a selection made from seeded random scores, every layer. */
export function freshOperators(spec: ModelSpec, seed: number, layers: readonly { heads: boolean; channels: boolean }[]): LayerOperators[] {
  const rng = new Rng(seed);
  const scores = Array.from({ length: spec.numLayers }, () => {
    const heads = Array.from({ length: spec.numKvHeads }, () => rng.next());
    const channels = Array.from({ length: spec.intermediateSize }, () => rng.next());
    return { heads: { rank: heads }, channels: { rank: channels } };
  });
  const selections = selectModel(scores, { stage: 1 });
  const initRng = new Rng(seed + 1);
  const out: LayerOperators[] = [];
  layers.forEach((want, layer) => {
    const sel = selections[layer]!;
    const ops = initLayerOperators(layer, { ...(want.heads ? { heads: sel.heads } : {}), ...(want.channels ? { channels: sel.channels } : {}) }, spec.headDim, initRng);
    if (ops.attn || ops.mlp) out.push(ops);
  });
  return out;
}

function jitter(rng: Rng, n: number, scale: number, offset: number): Float32Array {
  return Float32Array.from({ length: n }, () => offset + scale * (2 * rng.next() - 1));
}

/** The same units with trained-looking values: B2 of scale ~0.05, a and b within ±5% of 1. */
export function perturbOperators(layers: readonly LayerOperators[], seed: number): LayerOperators[] {
  const rng = new Rng(seed);
  const head = (op: HeadOperator): HeadOperator => ({ ...op, B2: jitter(rng, op.B2.length, 0.05, 0), a: jitter(rng, op.a.length, 0.05, 1), bV: jitter(rng, op.bV.length, 0.05, 1) });
  const channel = (op: ChannelOperator): ChannelOperator => ({
    ...op,
    B2: jitter(rng, op.B2.length, 0.05, 0),
    a: jitter(rng, op.a.length, 0.05, 1),
    bGate: jitter(rng, op.bGate.length, 0.05, 1),
    bUp: jitter(rng, op.bUp.length, 0.05, 1),
  });
  return layers.map((l) => ({ layer: l.layer, ...(l.attn ? { attn: head(l.attn) } : {}), ...(l.mlp ? { mlp: channel(l.mlp) } : {}) }));
}

export async function writeOperators(path: string, layers: readonly LayerOperators[], spec: ModelSpec, stage = 1, setting: TrainingSetting = 'operators'): Promise<void> {
  await writeOperatorFile(path, layers, { apexVersion: '0.1.0', stage, ratio: 0.375, setting, seed: 7 }, spec.headDim);
}

/** A trained.safetensors with the given F32 tensors. */
export async function writeUpdates(path: string, tensors: ReadonlyMap<string, { shape: readonly number[]; values: Float32Array }>): Promise<void> {
  const list: TensorToWrite[] = [...tensors].map(([name, t]) => ({ name, dtype: 'F32' as DType, shape: t.shape, data: new Uint8Array(t.values.buffer, t.values.byteOffset, t.values.byteLength) }));
  await writeSafetensors(path, list);
}

/** Every tensor's raw bytes, by name. */
export async function tensorBytes(dir: string): Promise<Map<string, { dtype: DType; shape: readonly number[]; bytes: Uint8Array }>> {
  const ck = await Checkpoint.open(dir);
  try {
    const out = new Map<string, { dtype: DType; shape: readonly number[]; bytes: Uint8Array }>();
    for (const t of ck.tensors()) out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes: await ck.readBytes(t.name) });
    return out;
  } finally {
    await ck.close();
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export interface RandomLlamaShape {
  readonly layers: number;
  readonly hidden: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly tied?: boolean;
}

/**
 * A LLaMA checkpoint with random weights (uniform ±0.04, norms 1), written tensor by tensor so
 * even a 1B-parameter model never sits in memory; `shardBytes` splits it Hugging Face style.
 */
export async function writeRandomLlama(dir: string, shape: RandomLlamaShape, dtype: 'F32' | 'BF16', seed: number, shardBytes?: number): Promise<ModelSpec> {
  await mkdir(dir, { recursive: true });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    num_hidden_layers: shape.layers,
    vocab_size: shape.vocab,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: shape.tied ?? false,
    torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32',
  };
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  const spec = parseModelConfig(config, 'random');
  let state = (seed * 2654435761) >>> 0 || 1;
  const values = (shape: readonly number[], norm: boolean) => async () => {
    const n = shape.reduce((p, d) => p * d, 1);
    const v = new Float32Array(n);
    if (norm) v.fill(1);
    else {
      for (let i = 0; i < n; i++) {
        state ^= state << 13; state >>>= 0;
        state ^= state >>> 17;
        state ^= state << 5; state >>>= 0;
        v[i] = (state / 4294967296 - 0.5) * 0.08;
      }
    }
    return encodeFromFloat32(v, dtype);
  };
  const tensors: TensorToWrite[] = [...expectedTensors(spec)].map(([name, dims]) => ({ name, dtype, shape: dims, data: values(dims, name.endsWith('norm.weight')) }));
  const plan = planShards(tensors, shardBytes);
  for (const f of plan.files) await writeSafetensors(join(dir, f.file), tensors.filter((t) => plan.weightMap.get(t.name) === f.file));
  if (plan.indexed) await writeFile(join(dir, 'model.safetensors.index.json'), indexJson(plan));
  return spec;
}
