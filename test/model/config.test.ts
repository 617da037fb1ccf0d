import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, UnsupportedModelError } from '../../src/errors.js';
import { parseModelConfig } from '../../src/model/config.js';
import { MAX_SMALL_FILE_BYTES } from '../../src/io/bounded-read.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { generationEosIds } from '../../src/model/generation-config.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';

const fixtureConfig = (name: string) => JSON.parse(readFileSync(`fixtures/${name}/config.json`, 'utf8')) as Record<string, unknown>;
const llama = () => fixtureConfig('llama-mha-f32');

function refused(raw: Record<string, unknown>, pattern: RegExp): void {
  let err: unknown;
  try {
    parseModelConfig(raw, 'cfg');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UnsupportedModelError);
  expect((err as UnsupportedModelError).exit).toBe(3);
  expect((err as Error).message).toMatch(pattern);
}

describe('parseModelConfig', () => {
  it('reads the MHA fixture (rope in rope_parameters form)', () => {
    const s = parseModelConfig(llama(), 'cfg');
    expect(s).toMatchObject({
      architecture: 'LlamaForCausalLM', numLayers: 4, hiddenSize: 128, numHeads: 4, numKvHeads: 4, headDim: 32,
      intermediateSize: 352, vocabSize: 2048, tieWordEmbeddings: false, rmsNormEps: 1e-5, qkvBias: false, oBias: false,
      mlpBias: false, maxPositionEmbeddings: 512, bosTokenId: 1, eosTokenIds: [2],
    });
    expect(s.rope).toEqual({ theta: 10000, type: 'default', source: 'rope_parameters' });
    expect(s.padTokenId).toBeUndefined();
    expect(s.slidingWindow).toBeUndefined();
  });

  it('reads the GQA fixture with explicit head_dim and tied embeddings', () => {
    const s = parseModelConfig(fixtureConfig('stories260K'), 'cfg');
    expect(s).toMatchObject({ numHeads: 8, numKvHeads: 4, headDim: 8, hiddenSize: 64, tieWordEmbeddings: true });
  });

  it('takes θ from top-level rope_theta, and the defaults when absent', () => {
    const { rope_parameters: _, ...rest } = llama();
    expect(parseModelConfig({ ...rest, rope_theta: 500000 }, 'cfg').rope).toEqual({ theta: 500000, type: 'default', source: 'rope_theta' });
    expect(parseModelConfig(rest, 'cfg').rope).toEqual({ theta: 10000, type: 'default', source: 'default' });
    const noHeadDim = { ...rest, head_dim: undefined, num_key_value_heads: undefined, rms_norm_eps: undefined };
    expect(parseModelConfig(noHeadDim, 'cfg')).toMatchObject({ headDim: 32, numKvHeads: 4, rmsNormEps: 1e-6 });
  });

  it('reads linear and llama3 scaling from rope_scaling (type or rope_type) and from rope_parameters', () => {
    const { rope_parameters: _, ...rest } = llama();
    expect(parseModelConfig({ ...rest, rope_theta: 1e4, rope_scaling: { type: 'linear', factor: 2 } }, 'cfg').rope).toEqual({ theta: 1e4, type: 'linear', factor: 2, source: 'rope_theta' });
    const l3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
    expect(parseModelConfig({ ...rest, rope_theta: 5e5, rope_scaling: l3 }, 'cfg').rope).toEqual({
      theta: 5e5, type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64, source: 'rope_theta',
    });
    expect(parseModelConfig({ ...rest, rope_parameters: { ...l3, rope_theta: 5e5 } }, 'cfg').rope).toMatchObject({ theta: 5e5, type: 'llama3', source: 'rope_parameters' });
    expect(parseModelConfig({ ...rest, rope_scaling: null, rope_theta: 1e4 }, 'cfg').rope.type).toBe('default');
  });

  it('derives biases per architecture', () => {
    expect(parseModelConfig({ ...llama(), attention_bias: true, mlp_bias: true }, 'cfg')).toMatchObject({ qkvBias: true, oBias: true, mlpBias: true });
    const qwen = { ...llama(), architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', sliding_window: 32, use_sliding_window: false };
    expect(parseModelConfig(qwen, 'cfg')).toMatchObject({ architecture: 'Qwen2ForCausalLM', qkvBias: true, oBias: false, mlpBias: false });
    expect(parseModelConfig(qwen, 'cfg').slidingWindow).toBeUndefined();
    expect(parseModelConfig({ ...qwen, use_sliding_window: true }, 'cfg').slidingWindow).toBe(32);
    const mistral = { ...llama(), architectures: ['MistralForCausalLM'], sliding_window: 4096 };
    expect(parseModelConfig(mistral, 'cfg')).toMatchObject({ architecture: 'MistralForCausalLM', qkvBias: false, slidingWindow: 4096 });
    expect(parseModelConfig({ ...mistral, sliding_window: null }, 'cfg').slidingWindow).toBeUndefined();
  });

  it('falls back to model_type without architectures; reads eos lists', () => {
    const { architectures: _, ...rest } = llama();
    expect(parseModelConfig({ ...rest, eos_token_id: [2, 7] }, 'cfg')).toMatchObject({ architecture: 'LlamaForCausalLM', eosTokenIds: [2, 7] });
  });

  it('refuses what the forward pass does not implement, with exit 3', () => {
    refused({ ...llama(), architectures: ['GPT2LMHeadModel'] }, /GPT2LMHeadModel.*not supported/);
    refused({ ...llama(), architectures: undefined, model_type: 'gemma' }, /model_type/);
    refused({ ...llama(), hidden_act: 'gelu' }, /hidden_act 'gelu'/);
    refused({ ...llama(), rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } }, /rope type 'yarn'/);
    refused({ ...llama(), rope_parameters: undefined, rope_scaling: { type: 'dynamic', factor: 2 } }, /rope type 'dynamic'/);
    refused({ ...llama(), quantization_config: { quant_method: 'gptq' } }, /quantiz/);
    refused({ ...llama(), partial_rotary_factor: 0.5 }, /partial_rotary_factor/);
    refused({ ...llama(), architectures: ['MistralForCausalLM'], attention_bias: true }, /bias/);
  });

  it('rejects invalid numbers with InputError naming the field', () => {
    const bad = (patch: Record<string, unknown>, field: RegExp) => {
      expect(() => parseModelConfig({ ...llama(), ...patch }, 'cfg')).toThrow(InputError);
      expect(() => parseModelConfig({ ...llama(), ...patch }, 'cfg')).toThrow(field);
    };
    bad({ hidden_size: 0 }, /hidden_size/);
    bad({ num_hidden_layers: 2.5 }, /num_hidden_layers/);
    bad({ num_key_value_heads: 3 }, /not a multiple/);
    bad({ vocab_size: '2048' }, /vocab_size/);
    bad({ rms_norm_eps: -1 }, /rms_norm_eps/);
    bad({ head_dim: undefined, hidden_size: 130 }, /not divisible/);
    bad({ rope_parameters: { rope_type: 'linear', rope_theta: 1e4 } }, /factor/);
    bad({ tie_word_embeddings: 'yes' }, /tie_word_embeddings/);
    // hidden = heads · head_dim is not required when head_dim is explicit
    expect(parseModelConfig({ ...llama(), head_dim: 16 }, 'cfg').headDim).toBe(16);
  });
});

describe('the small files of a model folder are read whole only when they are files of a plausible size', () => {
  // A 700 MB config.json failed with "cannot read (undefined)"; one linked to /dev/zero (so was
  // tokenizer.json, generation_config.json, the shard index) was read without end.
  async function folder(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'apex-small-files-'));
    for (const f of readdirSync('fixtures/llama-mha-f32')) copyFileSync(join('fixtures/llama-mha-f32', f), join(dir, f));
    return dir;
  }

  it.runIf(existsSync('/dev/zero'))('a link to a device: refused naming the file (exit 3), not read', { timeout: 20_000 }, async () => {
    for (const [file, open, code] of [
      ['config.json', (d: string) => Checkpoint.open(d), 'BAD_CONFIG'],
      ['generation_config.json', (d: string) => generationEosIds(d), 'BAD_CONFIG'],
      ['tokenizer.json', (d: string) => loadTokenizer(d), 'UNREADABLE'],
      ['tokenizer_config.json', (d: string) => loadTokenizer(d), 'UNREADABLE'],
    ] as const) {
      const dir = await folder();
      rmSync(join(dir, file));
      symlinkSync('/dev/zero', join(dir, file));
      await expect(open(dir), file).rejects.toMatchObject({ code, exit: 3, message: `${join(dir, file)}: not a regular file (a socket or device); apex reads this file whole, so it must be a file` });
    }
    // An index is read only without model.safetensors beside it (as transformers reads them).
    const sharded = await folder();
    rmSync(join(sharded, 'model.safetensors'));
    symlinkSync('/dev/zero', join(sharded, 'model.safetensors.index.json'));
    await expect(Checkpoint.open(sharded)).rejects.toMatchObject({ code: 'BAD_INDEX', message: expect.stringContaining('not a regular file') });
  });

  it('a config.json far larger than a config: refused with its size and the limit', async () => {
    const dir = await folder();
    truncateSync(join(dir, 'config.json'), MAX_SMALL_FILE_BYTES + 1);
    await expect(Checkpoint.open(dir)).rejects.toMatchObject({ code: 'BAD_CONFIG', exit: 3, message: `${join(dir, 'config.json')}: ${MAX_SMALL_FILE_BYTES + 1} bytes, more than the ${MAX_SMALL_FILE_BYTES}-byte limit for this file (is it the right file?)` });
  });
});
