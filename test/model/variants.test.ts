// The fixtures rewritten by apex's own writer (bf16, f16, sharded, rope in each config form,
// biases added) must compute exactly what a float32 forward of the same (rounded) weights in
// memory computes; rope scaling and biases are also checked against an independent plain-JS model.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DType } from '../../src/io/dtype.js';
import { decodeToFloat32, encodeFromFloat32 } from '../../src/io/float-codec.js';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { parseModelConfig } from '../../src/model/config.js';
import { disposeModelWeights, forwardLogits, modelWeightsFromArrays } from '../../src/model/model-weights.js';
import { computeLogits } from '../../src/model/streaming-forward.js';
import { Rng } from '../../src/util/rng.js';
import { loadReference, maxAbsDiff, openModel } from './helpers.js';
import { naiveLogits } from './naive-llama.js';

let work: string;
let base: Map<string, Float32Array>;
let baseConfig: Record<string, unknown>;
let ids: number[];

beforeAll(async () => {
  await selectBackend('wasm');
  work = await mkdtemp(join(tmpdir(), 'apex-variants-'));
  const ck = await Checkpoint.open('fixtures/llama-mha-f32');
  base = new Map();
  for (const t of ck.tensors()) base.set(t.name, new Float32Array(await ck.readFloat32(t.name)));
  baseConfig = ck.config;
  await ck.close();
  ids = Array.from((await loadReference('llama-mha-f32')).sequences[0]!.subarray(0, 24));
});
afterAll(async () => rm(work, { recursive: true, force: true }));

interface Variant {
  weights: Map<string, Float32Array>;
  config: Record<string, unknown>;
  dtype?: DType;
  maxShardBytes?: number;
}

/** Writes a variant with the checkpoint writer; returns its folder and the weights as stored, decoded. */
async function writeVariant(name: string, v: Variant): Promise<{ dir: string; stored: Map<string, Float32Array> }> {
  const dir = join(work, name);
  const dtype = v.dtype ?? 'F32';
  const tensors = [...v.weights].map(([n, values]) => {
    const shape = shapeOf(n, v.config);
    return floatTensor(n, dtype, shape, async () => values);
  });
  await writeCheckpoint({ outDir: dir, tensors, layout: { kind: 'plan', ...(v.maxShardBytes ? { maxShardBytes: v.maxShardBytes } : {}) }, files: { 'config.json': JSON.stringify(v.config) }, hash: false });
  const stored = new Map([...v.weights].map(([n, values]) => [n, decodeToFloat32(encodeFromFloat32(values, dtype), dtype, n)]));
  return { dir, stored };
}

function shapeOf(name: string, config: Record<string, unknown>): number[] {
  const spec = parseModelConfig(config, 'variant');
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const D = spec.hiddenSize;
  const I = spec.intermediateSize;
  const table: [RegExp, number[]][] = [
    [/embed_tokens|lm_head/, [spec.vocabSize, D]],
    [/norm\.weight$/, [D]],
    [/q_proj\.weight/, [q, D]], [/[kv]_proj\.weight/, [kv, D]], [/o_proj\.weight/, [D, q]],
    [/(gate|up)_proj\.weight/, [I, D]], [/down_proj\.weight/, [D, I]],
    [/q_proj\.bias/, [q]], [/[kv]_proj\.bias/, [kv]], [/o_proj\.bias|down_proj\.bias/, [D]], [/(gate|up)_proj\.bias/, [I]],
  ];
  return table.find(([re]) => re.test(name))![1];
}

/** Streaming logits from the written folder vs a float32 forward of the stored weights held in memory. */
async function streamingVsInMemory(dir: string, stored: Map<string, Float32Array>): Promise<{ streamed: Float32Array; diff: number }> {
  const m = await openModel(dir);
  try {
    const [streamed] = await computeLogits(m.source, [ids]);
    const model = modelWeightsFromArrays(m.spec, stored);
    const inMemory = tf.tidy(() => forwardLogits(model, tf.tensor2d([ids], [1, ids.length], 'int32')).dataSync());
    disposeModelWeights(model);
    return { streamed: streamed!, diff: maxAbsDiff(streamed!, inMemory) };
  } finally {
    await m.checkpoint.close();
  }
}

function addBiases(config: Record<string, unknown>, roles: string[], seed: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const weights = new Map(base);
  for (let l = 0; l < 4; l++) {
    for (const role of roles) {
      const name = `model.layers.${l}.${role}.bias`;
      const n = shapeOf(name, config)[0]!;
      weights.set(name, Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 0.2));
    }
  }
  return weights;
}

describe('checkpoint variants compute what their weights say', () => {
  for (const dtype of ['BF16', 'F16'] as const) {
    it(`${dtype} storage equals a float32 forward of the rounded weights (≤ 1e-5)`, async () => {
      const { dir, stored } = await writeVariant(dtype, { weights: base, config: baseConfig, dtype });
      const { streamed, diff } = await streamingVsInMemory(dir, stored);
      expect(diff).toBeLessThanOrEqual(1e-5);
      // The rounding really happened: the logits moved away from the float32 model's.
      const { streamed: f32 } = await streamingVsInMemory('fixtures/llama-mha-f32', base);
      expect(maxAbsDiff(streamed, f32)).toBeGreaterThan(1e-4);
    });
  }

  it('a sharded copy gives the same logits as the single file', async () => {
    const { dir, stored } = await writeVariant('sharded', { weights: base, config: baseConfig, maxShardBytes: 400_000 });
    const written = await Checkpoint.open(dir);
    expect(written.shardFiles.length).toBeGreaterThan(3);
    await written.close();
    const { streamed, diff } = await streamingVsInMemory(dir, stored);
    expect(diff).toBeLessThanOrEqual(1e-5);
    const { streamed: single } = await streamingVsInMemory('fixtures/llama-mha-f32', base);
    expect(maxAbsDiff(streamed, single)).toBe(0);
  });

  it('rope θ written top-level, in rope_parameters, or as rope_scaling linear factor 1 gives identical logits', async () => {
    const { rope_parameters: _, ...rest } = baseConfig;
    const forms = [
      { ...rest, rope_theta: 10000 },
      { ...rest, rope_parameters: { rope_type: 'default', rope_theta: 10000 } },
      { ...rest, rope_theta: 10000, rope_scaling: { type: 'linear', factor: 1 } },
      { ...rest, rope_parameters: { rope_type: 'linear', factor: 1, rope_theta: 10000 } },
    ];
    const { streamed: reference } = await streamingVsInMemory('fixtures/llama-mha-f32', base);
    for (const [k, config] of forms.entries()) {
      const { dir, stored } = await writeVariant(`rope-form-${k}`, { weights: base, config });
      const { streamed, diff } = await streamingVsInMemory(dir, stored);
      expect(diff).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(streamed, reference)).toBe(0);
    }
  });

  const scaled: [string, Record<string, unknown>][] = [
    ['linear factor 2', { rope_theta: 10000, rope_scaling: { type: 'linear', factor: 2 } }],
    ['llama3', { rope_parameters: { rope_type: 'llama3', rope_theta: 10000, factor: 4, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }],
  ];
  for (const [label, patch] of scaled) {
    it(`rope scaling ${label} matches the independent plain-JS model`, async () => {
      const { rope_parameters: _r, ...rest } = baseConfig;
      const config = { ...rest, ...patch };
      const { dir, stored } = await writeVariant(`rope-${label.replace(/ /g, '-')}`, { weights: base, config });
      const { streamed, diff } = await streamingVsInMemory(dir, stored);
      expect(diff).toBeLessThanOrEqual(1e-5);
      const naive = naiveLogits(parseModelConfig(config, label), stored, ids);
      expect(maxAbsDiff(streamed, naive)).toBeLessThanOrEqual(1e-4);
      // and scaling changed the result
      const naiveDefault = naiveLogits(parseModelConfig(baseConfig, 'default'), stored, ids);
      expect(maxAbsDiff(naive, naiveDefault)).toBeGreaterThan(1e-2);
    });
  }

  it('Qwen2 with random q/k/v biases matches the in-memory forward and the plain-JS model', async () => {
    const config = { ...baseConfig, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096 };
    const weights = addBiases(config, ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'], 7);
    const { dir, stored } = await writeVariant('qwen2', { weights, config, dtype: 'BF16' });
    const { streamed, diff } = await streamingVsInMemory(dir, stored);
    expect(diff).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(streamed, naiveLogits(parseModelConfig(config, 'qwen2'), stored, ids))).toBeLessThanOrEqual(1e-4);
  });

  it('LLaMA attention_bias + mlp_bias (all seven biases) matches the plain-JS model', async () => {
    const config = { ...baseConfig, attention_bias: true, mlp_bias: true };
    const roles = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];
    const weights = addBiases(config, roles, 11);
    const { dir, stored } = await writeVariant('llama-bias', { weights, config });
    const { streamed, diff } = await streamingVsInMemory(dir, stored);
    expect(diff).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(streamed, naiveLogits(parseModelConfig(config, 'bias'), stored, ids))).toBeLessThanOrEqual(1e-4);
  });

  it('the plain-JS model itself agrees with the transformers reference (so it can serve as truth)', async () => {
    const ref = await loadReference('llama-mha-f32');
    const naive = naiveLogits(parseModelConfig(baseConfig, 'ref'), base, ids);
    const V = 2048;
    expect(maxAbsDiff(naive, ref.logits.subarray(0, ids.length * V))).toBeLessThanOrEqual(1e-3);
  });
});
