import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { LoraAdapters, loraParamCount, loraRankForParamCount, loraTensorName, maxLoraRank } from '../../src/train/lora.js';
import { llama2_7b, stories260K } from './model-specs.js';

afterAll(() => tf.disposeVariables());

describe('LoRA', () => {
  it('counts r · Σ(in + out) over the seven projections of every layer', () => {
    // LLaMA-2-7B, r = 64: per layer 4 · 64 · 8192 + 3 · 64 · 15104 = 4,997,120; · 32 layers
    expect(loraParamCount(llama2_7b, 64)).toBe(159_907_840);
    // stories260K (GQA: k/v out = 32): per layer q 128 + k 96 + v 96 + o 128 + 3 · 236 = 1156
    expect(loraParamCount(stories260K, 1)).toBe(5 * 1156);
    expect(maxLoraRank(stories260K)).toBe(32);
  });

  it('picks the rank whose count is closest to a target (ties to the smaller)', () => {
    expect(loraRankForParamCount(llama2_7b, 159_907_840)).toBe(64);
    // 2.4% of 6.74B ≈ 161.8M: rank 64 (159.9M) is closer than 65 (162.4M)
    expect(loraRankForParamCount(llama2_7b, 161_000_000)).toBe(64);
    expect(loraRankForParamCount(llama2_7b, 161_500_000)).toBe(65);
    const per = loraParamCount(stories260K, 1);
    expect(loraRankForParamCount(stories260K, 2.5 * per)).toBe(2);
    expect(loraRankForParamCount(stories260K, 2.5 * per + 1)).toBe(3);
    expect(loraRankForParamCount(stories260K, 1)).toBe(1);
    expect(loraRankForParamCount(stories260K, 1e12)).toBe(32);
    expect(() => loraRankForParamCount(stories260K, 0)).toThrow(UsageError);
  });

  it('initialises A Kaiming-uniform in ±1/√in, B zero, scale α/r with α = 2r', () => {
    const lora = LoraAdapters.create(stories260K, { rank: 4, seed: 11 });
    expect(lora.scale).toBe(2);
    expect(lora.paramCount()).toBe(loraParamCount(stories260K, 4));
    const params = lora.parameters();
    expect(params.length).toBe(5 * 7 * 2);
    expect(params[0]!.name).toBe('model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(params[1]!.name).toBe('model.layers.0.self_attn.q_proj.lora_B.weight');
    const downA = params.find((p) => p.name === loraTensorName(stories260K, 3, 'down_proj', 'A'))!.variable;
    expect(downA.shape).toEqual([4, 172]);
    const values = downA.dataSync();
    const bound = 1 / Math.sqrt(172);
    expect(Math.max(...values)).toBeLessThanOrEqual(bound);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(-bound);
    // a uniform sample of 688 spans most of the interval
    expect(Math.max(...values)).toBeGreaterThan(0.9 * bound);
    expect(Math.min(...values)).toBeLessThan(-0.9 * bound);
    const downB = params.find((p) => p.name === loraTensorName(stories260K, 3, 'down_proj', 'B'))!.variable;
    expect(downB.shape).toEqual([64, 4]);
    expect(Array.from(downB.dataSync()).every((v) => v === 0)).toBe(true);
    // same seed, same A
    const again = LoraAdapters.create(stories260K, { rank: 4, seed: 11 });
    expect(Array.from(again.parameters()[0]!.variable.dataSync())).toEqual(Array.from(params[0]!.variable.dataSync()));
    again.dispose();
    lora.dispose();
  });

  it('transformWeight is W + (α/r)·B·A, the identity while B = 0, and differentiable', () => {
    const lora = LoraAdapters.create(stories260K, { rank: 2, alpha: 3, seed: 1 });
    const hooks = lora.hooksForLayer(1);
    const w = tf.randomNormal([32, 64], 0, 1, 'float32', 5) as tf.Tensor2D;
    const same = hooks.transformWeight!('v_proj', w);
    expect(Array.from(same.dataSync())).toEqual(Array.from(w.dataSync()));

    const params = new Map(lora.parameters().map((p) => [p.name, p.variable]));
    const a = params.get(loraTensorName(stories260K, 1, 'v_proj', 'A'))!;
    const b = params.get(loraTensorName(stories260K, 1, 'v_proj', 'B'))!;
    b.assign(tf.randomNormal([32, 2], 0, 1, 'float32', 6));
    const merged = lora.mergedWeight(1, 'v_proj', w).arraySync();
    const [A, B, W] = [a.arraySync(), b.arraySync(), w.arraySync()] as number[][][];
    for (const [r, c] of [[0, 0], [31, 63], [7, 20]] as const) {
      const delta = B![r]![0]! * A![0]![c]! + B![r]![1]! * A![1]![c]!;
      expect(merged[r]![c]!).toBeCloseTo(W![r]![c]! + 1.5 * delta, 5);
    }
    // d/dB of sum(W') = scale · (row sums of A)ᵀ broadcast: every row of dB equals 1.5 · Σ_c A[k, c]
    const { grads } = tf.variableGrads(() => tf.sum(hooks.transformWeight!('v_proj', w)), [b]);
    const g = grads[b.name]!.arraySync() as number[][];
    const rowSums = A!.map((row) => row.reduce((s, v) => s + v, 0));
    expect(g[10]![0]).toBeCloseTo(1.5 * rowSums[0]!, 4);
    expect(g[10]![1]).toBeCloseTo(1.5 * rowSums[1]!, 4);
    lora.dispose();
  });

  it('refuses ranks outside [1, smallest projection side]', () => {
    expect(() => LoraAdapters.create(stories260K, { rank: 0, seed: 1 })).toThrow(UsageError);
    expect(() => LoraAdapters.create(stories260K, { rank: 33, seed: 1 })).toThrow(UsageError);
  });
});
