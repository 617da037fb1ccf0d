import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { checkCheckpointTensors, expectedTensors, findLayerTensor, globalTensorName, layerTensorNames, layerTensors } from '../../src/model/architecture.js';
import { parseModelConfig } from '../../src/model/config.js';

const config = (name: string) => JSON.parse(readFileSync(`fixtures/${name}/config.json`, 'utf8')) as Record<string, unknown>;
const mha = parseModelConfig(config('llama-mha-f32'), 'mha');
const gqa = parseModelConfig(config('stories260K'), 'gqa');

describe('architecture table', () => {
  it('lists a LLaMA layer\'s tensors with shapes, units and APEX rules', () => {
    const t = layerTensors(gqa, 3);
    expect(t.map((x) => x.name)).toEqual([
      'model.layers.3.input_layernorm.weight', 'model.layers.3.self_attn.q_proj.weight', 'model.layers.3.self_attn.k_proj.weight',
      'model.layers.3.self_attn.v_proj.weight', 'model.layers.3.self_attn.o_proj.weight', 'model.layers.3.post_attention_layernorm.weight',
      'model.layers.3.mlp.gate_proj.weight', 'model.layers.3.mlp.up_proj.weight', 'model.layers.3.mlp.down_proj.weight',
    ]);
    const rule = (role: Parameters<typeof findLayerTensor>[2]) => {
      const x = findLayerTensor(gqa, 0, role)!;
      return [x.units, x.unitAxis, x.rule, x.dims];
    };
    expect(rule('q_proj')).toEqual(['head', 'rows', 'direct-only', [64, 64]]);
    expect(rule('k_proj')).toEqual(['kv-head', 'rows', 'direct-only', [32, 64]]);
    expect(rule('v_proj')).toEqual(['kv-head', 'rows', 'output-side', [32, 64]]);
    expect(rule('o_proj')).toEqual(['head', 'cols', 'input-side', [64, 64]]);
    expect(rule('gate_proj')).toEqual(['channel', 'rows', 'output-side', [172, 64]]);
    expect(rule('up_proj')).toEqual(['channel', 'rows', 'output-side', [172, 64]]);
    expect(rule('down_proj')).toEqual(['channel', 'cols', 'input-side', [64, 172]]);
    expect(rule('input_layernorm')).toEqual(['none', 'none', 'none', [64]]);
  });

  it('adds biases only where the config has them, following their rows\' rule', () => {
    const qwen = parseModelConfig({ ...config('llama-mha-f32'), architectures: ['Qwen2ForCausalLM'] }, 'q');
    const biases = layerTensors(qwen, 0).filter((t) => t.param === 'bias');
    expect(biases.map((b) => [b.role, b.rule, b.dims[0]])).toEqual([['q_proj', 'direct-only', 128], ['k_proj', 'direct-only', 128], ['v_proj', 'output-side', 128]]);
    const all = parseModelConfig({ ...config('llama-mha-f32'), attention_bias: true, mlp_bias: true }, 'b');
    const rules = Object.fromEntries(layerTensors(all, 0).filter((t) => t.param === 'bias').map((t) => [t.role, t.rule]));
    expect(rules).toEqual({ q_proj: 'direct-only', k_proj: 'direct-only', v_proj: 'output-side', o_proj: 'none', gate_proj: 'output-side', up_proj: 'output-side', down_proj: 'none' });
    expect(layerTensorNames(all, 1)).toContain('model.layers.1.mlp.down_proj.bias');
  });

  it('resolves globals, lm_head to the embeddings when tied', () => {
    expect(globalTensorName(gqa, 'lm_head')).toBe('model.embed_tokens.weight');
    expect(globalTensorName(mha, 'lm_head')).toBe('lm_head.weight');
    expect(expectedTensors(gqa).size).toBe(2 + 5 * 9);
    expect(expectedTensors(mha).get('lm_head.weight')).toEqual([2048, 128]);
  });

  it('accepts the fixtures exactly as they are', async () => {
    for (const [name, spec] of [['llama-mha-f32', mha], ['stories260K', gqa]] as const) {
      const ck = await Checkpoint.open(`fixtures/${name}`);
      expect(checkCheckpointTensors(spec, ck.tensors(), name).warnings).toEqual([]);
      await ck.close();
    }
  });

  it('names missing, misshapen, non-float and unexpected tensors; warns about harmless extras', () => {
    const tensors = [...expectedTensors(gqa)].map(([name, shape]) => ({ name, shape, dtype: 'BF16' }));
    const without = tensors.filter((t) => t.name !== 'model.layers.2.mlp.up_proj.weight');
    expect(() => checkCheckpointTensors(gqa, without, 'ck')).toThrow(/missing tensor 'model\.layers\.2\.mlp\.up_proj\.weight'/);
    const misshapen = tensors.map((t) => (t.name === 'model.norm.weight' ? { ...t, shape: [65] } : t));
    expect(() => checkCheckpointTensors(gqa, misshapen, 'ck')).toThrow(/'model\.norm\.weight' has shape \[65\]/);
    const ints = tensors.map((t) => (t.name === 'model.norm.weight' ? { ...t, dtype: 'I8' } : t));
    expect(() => checkCheckpointTensors(gqa, ints, 'ck')).toThrow(/I8/);
    const extra = [...tensors, { name: 'model.layers.0.self_attn.q_norm.weight', shape: [8], dtype: 'BF16' }];
    expect(() => checkCheckpointTensors(gqa, extra, 'ck')).toThrow(InputError);
    expect(() => checkCheckpointTensors(gqa, extra, 'ck')).toThrow(/unexpected tensor 'model\.layers\.0\.self_attn\.q_norm\.weight'/);
    const harmless = [...tensors, { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [4], dtype: 'F32' }, { name: 'lm_head.weight', shape: [512, 64], dtype: 'BF16' }];
    const { warnings } = checkCheckpointTensors(gqa, harmless, 'ck');
    expect(warnings).toHaveLength(2);
    expect(warnings.join('\n')).toMatch(/inv_freq/);
    expect(warnings.join('\n')).toMatch(/tie_word_embeddings/);
  });

  it('names every problem at once, with the first one\'s code (a config of the wrong size breaks every layer alike)', () => {
    const tensors = [...expectedTensors(gqa)].map(([name, shape]) => ({ name, shape, dtype: 'BF16' }));
    const gates = tensors.filter((t) => t.name.endsWith('mlp.gate_proj.weight')).map((t) => t.name);
    expect(gates.length).toBe(gqa.numLayers);
    const lastDown = `model.layers.${gqa.numLayers - 1}.mlp.down_proj.weight`;
    const wrong = tensors.filter((t) => t.name !== lastDown).map((t) => (gates.includes(t.name) ? { ...t, shape: [t.shape[0]! + 1, t.shape[1]!] } : t));
    const error = (() => { try { checkCheckpointTensors(gqa, [...wrong, { name: 'extra.weight', shape: [1], dtype: 'F32' }], 'ck'); } catch (e) { return e as InputError; } })()!;
    expect(error.code).toBe('TENSOR_SHAPE');
    for (const name of [...gates, lastDown, 'extra.weight']) expect(error.message, name).toContain(`'${name}'`);
    expect(error.message).toMatch(new RegExp(`^ck: tensor 'model\\.layers\\.0\\.mlp\\.gate_proj\\.weight' has shape .*; ${gqa.numLayers + 1} more: `));
  });
});
