import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { parseModelConfig } from '../../src/model/config.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { AdamW } from '../../src/train/adamw.js';
import {
  directTrainables,
  modelParamCount,
  modelTensors,
  operatorParamCount,
  summarizeTrainable,
  trainableEntryCount,
  trainableMask,
} from '../../src/train/trainable-params.js';
import { selection, stories260K } from './model-specs.js';

let checkpointTensors: { name: string; shape: readonly number[] }[];
let parsed: ModelSpec;

beforeAll(async () => {
  const c = await Checkpoint.open('fixtures/stories260K');
  checkpointTensors = c.tensorNames().map((name) => ({ name, shape: c.info(name).shape }));
  parsed = parseModelConfig(c.config as Record<string, unknown>, 'fixtures/stories260K');
  await c.close();
});
afterAll(() => tf.disposeVariables());

// Every layer: head units (KV groups) P = [1], N = [3], E = [0]; channels P = [5, 7], N = [2, 9], E = [100].
const selections = [0, 1, 2, 3, 4].map((l) => selection(l, [[1], [3], [0]], [[5, 7], [2, 9], [100]]));

describe('trainable parameters', () => {
  it('counts the model: stories260K has 260,032 parameters, the tensors of its checkpoint', () => {
    // embed 512·64 + final norm 64 + 5 layers · (2·64 norms + q 4096 + k 2048 + v 2048 + o 4096 + 3 · 172·64)
    for (const key of ['numLayers', 'hiddenSize', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize', 'tieWordEmbeddings'] as const) {
      expect(stories260K[key]).toEqual(parsed[key]);
    }
    expect(modelParamCount(stories260K)).toBe(260_032);
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    expect(modelTensors(stories260K).sort(byName)).toEqual([...checkpointTensors].sort(byName));
  });

  it('vanilla and full train everything; operators and lora no model tensor', () => {
    expect(directTrainables(stories260K, 'vanilla').length).toBe(checkpointTensors.length);
    const full = summarizeTrainable('full', directTrainables(stories260K, 'full'), 260_032, { operators: 470 });
    expect(full.trainable).toBe(260_032 + 470);
    expect(directTrainables(stories260K, 'operators')).toEqual([]);
    expect(directTrainables(stories260K, 'lora')).toEqual([]);
  });

  it('structured trains the rows of q/k/v/gate/up and columns of o/down of N ∪ P ∪ E', () => {
    const direct = directTrainables(stories260K, 'structured', selections);
    const byName = new Map(direct.map((t) => [t.name, t]));
    // groups {0, 1, 3}: KV rows 0-15 and 24-31; query heads {0, 1, 2, 3, 6, 7}: rows 0-31 and 48-63
    const kvRows = [...range(0, 16), ...range(24, 32)];
    const qRows = [...range(0, 32), ...range(48, 64)];
    expect(Array.from(byName.get('model.layers.2.self_attn.k_proj.weight')!.rows!)).toEqual(kvRows);
    expect(Array.from(byName.get('model.layers.2.self_attn.v_proj.weight')!.rows!)).toEqual(kvRows);
    expect(Array.from(byName.get('model.layers.2.self_attn.q_proj.weight')!.rows!)).toEqual(qRows);
    expect(Array.from(byName.get('model.layers.2.self_attn.o_proj.weight')!.columns!)).toEqual(qRows);
    expect(Array.from(byName.get('model.layers.2.mlp.gate_proj.weight')!.rows!)).toEqual([2, 5, 7, 9, 100]);
    expect(Array.from(byName.get('model.layers.2.mlp.up_proj.weight')!.rows!)).toEqual([2, 5, 7, 9, 100]);
    expect(Array.from(byName.get('model.layers.2.mlp.down_proj.weight')!.columns!)).toEqual([2, 5, 7, 9, 100]);
    expect(byName.has('model.layers.2.input_layernorm.weight')).toBe(false);
    expect(byName.has('model.embed_tokens.weight')).toBe(false);
    expect(direct.length).toBe(5 * 7);
    // per layer: (48 q rows + 48 o columns + 2 · 24 k/v rows) · 64 + 3 · 5 · 64 = 10,176
    const summary = summarizeTrainable('structured', direct, 260_032, { operators: operatorParamCount(selections, 8) });
    expect(summary.direct).toBe(5 * 10_176);
    // operators per layer: heads n = 8 (nb 2, bs 4): 2·2·16 + 2·8 = 80; channels n = 2 (nb 1): 8 + 3·2 = 14
    expect(summary.operators).toBe(5 * 94);
    expect(summary.trainable).toBe(5 * 10_176 + 470);
    expect(summary.fraction).toBeCloseTo((5 * 10_176 + 470) / 260_032, 12);

    const withEmbeddings = directTrainables(stories260K, 'structured', selections, { trainEmbeddings: true });
    // tied: the embedding is the only extra tensor, 512 · 64
    expect(withEmbeddings.reduce((s, t) => s + trainableEntryCount(t), 0)).toBe(5 * 10_176 + 32_768);
  });

  it('structured biases follow their rows; o/down biases stay frozen', () => {
    const withBias = { ...stories260K, numLayers: 1, qkvBias: true, oBias: true, mlpBias: true };
    const direct = directTrainables(withBias, 'structured', [selections[0]!]);
    const biases = direct.filter((t) => t.name.endsWith('.bias'));
    expect(biases.map((t) => t.name)).toEqual([
      'model.layers.0.self_attn.q_proj.bias',
      'model.layers.0.self_attn.k_proj.bias',
      'model.layers.0.self_attn.v_proj.bias',
      'model.layers.0.mlp.gate_proj.bias',
      'model.layers.0.mlp.up_proj.bias',
    ]);
    expect(biases.map(trainableEntryCount)).toEqual([48, 24, 24, 5, 5]);
  });

  it('with the masks, AdamW changes exactly the selected rows and columns', () => {
    const direct = directTrainables(stories260K, 'structured', selections);
    for (const name of ['model.layers.1.self_attn.q_proj.weight', 'model.layers.1.mlp.down_proj.weight']) {
      const t = direct.find((d) => d.name === name)!;
      const [rows, cols] = t.shape as [number, number];
      const start = tf.randomNormal([rows, cols], 0, 1, 'float32', 3);
      const w = tf.variable(start);
      const mask = trainableMask(t)!;
      const opt = new AdamW([{ name, variable: w, mask }], { weightDecay: 0.1 });
      opt.apply(new Map([[name, tf.randomNormal([rows, cols], 0, 1, 'float32', 4)]]), 0.01);
      const before = start.dataSync();
      const after = w.dataSync();
      const allowedRows = new Set(t.rows ?? []);
      const allowedCols = new Set(t.columns ?? []);
      let changed = 0;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const allowed = t.rows !== undefined ? allowedRows.has(r) : allowedCols.has(c);
          if (allowed) expect(after[i]).not.toBe(before[i]);
          else expect(after[i]).toBe(before[i]);
          if (after[i] !== before[i]) changed++;
        }
      }
      expect(changed).toBe(trainableEntryCount(t));
      opt.dispose();
      mask.dispose();
    }
  });

  it('has no mask for whole tensors and refuses structured without selections', () => {
    expect(trainableMask({ name: 'x', shape: [2, 2] })).toBeUndefined();
    expect(() => directTrainables(stories260K, 'structured')).toThrow(/selection/);
  });
});

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}
