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
import { selectModel } from '../../src/ops/selection.js';
import { STRUCTURED_DEFAULTS } from '../../src/train/stage-options.js';
import { llama2_7b, selection, stories260K } from './model-specs.js';

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

  it("the spec's reference totals on LLaMA-2-7B are the paper's 52% setting (51.8%, §4), operators alone ≈ 0.1%", () => {
    // The selection's sizes do not depend on the scores; all-zero scores give them.
    const zeros = (n: number) => ({ rank: new Float32Array(n) });
    const layers = Array.from({ length: llama2_7b.numLayers }, () => ({ heads: zeros(llama2_7b.numKvHeads), channels: zeros(llama2_7b.intermediateSize) }));
    // §4's reference totals are the structured defaults.
    expect(STRUCTURED_DEFAULTS).toEqual({ tunedAttnRatio: 0.5625, tunedFfnRatio: 0.465, trainEmbeddings: true });
    const sel = selectModel(layers, { stage: 1, tunedAttnRatio: 0.5625, tunedFfnRatio: 0.465 });
    // By hand: heads k = ⌊32·0.375/2⌋ = 6, tuned max(12, ⌊32·0.5625⌋ = 18) = 18 heads = 2304 rows;
    // channels k = ⌊11008·0.375/2⌋ = 2064, tuned max(4128, ⌊5118.72⌋) = 5118.
    // Per layer: q/k/v rows + o columns 4·2304·4096 = 37,748,736; gate/up rows + down columns
    // 3·5118·4096 = 62,889,984; · 32 layers = 3,220,439,040; embeddings + lm_head 2·32000·4096.
    const direct = directTrainables(llama2_7b, 'structured', sel, { trainEmbeddings: true });
    const directCount = direct.reduce((s, t) => s + trainableEntryCount(t), 0);
    expect(directCount).toBe(32 * (37_748_736 + 62_889_984) + 262_144_000);
    // Operators per layer: heads n = 768 (nb 24, bs 32): 2·768²/24 + a, b_v = 49,152 + 1,536;
    // channels n = 2064 (nb 43, bs 48): 2·2064²/43 + a, b_gate, b_up = 198,144 + 6,192.
    const operators = operatorParamCount(sel, llama2_7b.headDim);
    expect(operators).toBe(32 * (49_152 + 1_536 + 198_144 + 6_192));
    // 32 layers · (4·4096² + 3·4096·11008 + 2·4096) + 2·32000·4096 + 4096
    const model = modelParamCount(llama2_7b);
    expect(model).toBe(6_738_415_616);
    const summary = summarizeTrainable('structured', direct, model, { operators });
    expect(Math.round(summary.fraction * 1000) / 10).toBe(51.8);
    const alone = summarizeTrainable('operators', [], model, { operators });
    expect(Math.round(alone.fraction * 1000) / 10).toBe(0.1);
  });

  it('has no mask for whole tensors and refuses structured without selections', () => {
    expect(trainableMask({ name: 'x', shape: [2, 2] })).toBeUndefined();
    expect(() => directTrainables(stories260K, 'structured')).toThrow(/selection/);
  });
});

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}
