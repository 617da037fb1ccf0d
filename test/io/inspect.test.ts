import { execFileSync, spawnSync } from 'node:child_process';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { inspectCheckpoint, summarizeRope } from '../../src/io/inspect.js';
import { rawSafetensors, tempDir } from './helpers.js';

const dir = await tempDir('apex-inspect-');
const sharded = join(dir, 'sharded-bf16');
/** llama-mha-f32: 2 embedding matrices 2048×128, 4 layers of 4·128² + 3·128·352 + 2·128, final norm 128. */
const FIXTURE_PARAMS = 2 * 2048 * 128 + 4 * (4 * 128 * 128 + 3 * 128 * 352 + 2 * 128) + 128;

beforeAll(async () => {
  const ck = await Checkpoint.open('fixtures/llama-mha-f32');
  await writeCheckpoint({
    outDir: sharded,
    input: ck,
    tensors: ck.tensors().map((t) => floatTensor(t.name, 'BF16', t.shape, () => ck.readFloat32(t.name))),
    layout: { kind: 'plan', maxShardBytes: 1_000_000 },
    hash: false,
  });
  await ck.close();
  if (!existsSync('dist/commands/inspect.js')) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
});

function cli(...args: string[]): { status: number | null; json: any } {
  const r = spawnSync(process.execPath, ['bin/run.js', 'inspect', ...args, '--json'], { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { status: r.status, json: JSON.parse(r.stdout) };
}

describe('inspectCheckpoint', () => {
  it('summarises a sharded BF16 checkpoint', async () => {
    const r = await inspectCheckpoint(sharded);
    expect(r.indexed).toBe(true);
    expect(r.shards.length).toBeGreaterThan(1);
    expect(r.shards.reduce((s, x) => s + x.tensors, 0)).toBe(39);
    expect(r.dtypes).toEqual([{ dtype: 'BF16', tensors: 39, parameters: FIXTURE_PARAMS, bytes: 2 * FIXTURE_PARAMS }]);
    expect(r.parameterCount).toBe(FIXTURE_PARAMS);
    expect(r.validation.ok).toBe(true);
    expect(r.validation.checks.map((c) => c.check)).toEqual(['safetensors headers', 'shard index', 'tensors match config']);
  });

  it('still summarises an architecture apex does not compute with, marked unsupported', async () => {
    const d = join(dir, 'neox');
    await cp('fixtures/llama-mha-f32', d, { recursive: true });
    const config = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
    await writeFile(join(d, 'config.json'), JSON.stringify({ ...config, architectures: ['GPTNeoXForCausalLM'], model_type: 'gpt_neox' }));
    const r = await inspectCheckpoint(d);
    expect(r.supported).toBe(false);
    expect(r.unsupportedReason).toMatch(/GPTNeoXForCausalLM/);
    expect(r.config.layers).toBe(4);
    expect(r.tensorCount).toBe(39);
    expect(r.validation.checks.map((c) => c.check)).toEqual(['safetensors headers']);
  });

  it('reports tensors that do not match config.json as a failed check', async () => {
    const d = join(dir, 'mismatch');
    await cp('fixtures/llama-mha-f32', d, { recursive: true });
    const config = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
    await writeFile(join(d, 'config.json'), JSON.stringify({ ...config, intermediate_size: 256 }));
    const r = await inspectCheckpoint(d);
    expect(r.validation.ok).toBe(false);
    expect(r.validation.checks.find((c) => c.check === 'tensors match config')!.detail).toMatch(/mlp\..*shape/);
    // The command exits 3 after the full report, which --json keeps as data.
    const { status, json } = cli(d);
    expect(status).toBe(3);
    expect(json).toMatchObject({ ok: false, error: { code: 'VALIDATION_FAILED', exit: 3, message: expect.stringMatching(/validation failed: tensors match config: .*shape/) } });
    expect(json.data.tensorCount).toBe(39);
    expect(json.data.validation.ok).toBe(false);
  });

  it('a config.json that contradicts itself is a failed check (exit 3); an unsupported architecture is not (exit 0)', async () => {
    const d = join(dir, 'bad-heads');
    await cp('fixtures/llama-mha-f32', d, { recursive: true });
    const config = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
    await writeFile(join(d, 'config.json'), JSON.stringify({ ...config, num_attention_heads: 3, num_key_value_heads: 4 }));
    const r = await inspectCheckpoint(d);
    expect(r.validation.checks.find((c) => c.check === 'config.json')).toMatchObject({ ok: false, detail: expect.stringMatching(/not a multiple of num_key_value_heads/) });
    expect(cli(d).status).toBe(3);
    expect(cli(join(dir, 'neox')).status).toBe(0);
  });

  it('reads rope settings in all three config forms', () => {
    expect(summarizeRope({ rope_theta: 500000 })).toEqual({ writtenAs: ['rope_theta'], theta: 500000, type: 'default', scaling: {} });
    expect(summarizeRope({ rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } })).toEqual({
      writtenAs: ['rope_theta', 'rope_scaling'],
      theta: 500000,
      type: 'llama3',
      scaling: { factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    });
    expect(summarizeRope({ rope_parameters: { rope_theta: 1e6, rope_type: 'linear', factor: 2 } })).toEqual({ writtenAs: ['rope_parameters'], theta: 1e6, type: 'linear', scaling: { factor: 2 } });
    expect(summarizeRope({})).toEqual({ writtenAs: [], theta: null, type: 'default', scaling: {} });
  });
});

describe('apex inspect (CLI)', () => {
  it('--json on the MHA fixture: ok envelope with the summary, exit 0', () => {
    const { status, json } = cli('fixtures/llama-mha-f32');
    expect(status).toBe(0);
    expect(json.ok).toBe(true);
    expect(json.data.config).toMatchObject({ architecture: 'LlamaForCausalLM', layers: 4, hiddenSize: 128, heads: 4, kvHeads: 4, headDim: 32, intermediateSize: 352, vocabSize: 2048, tiedEmbeddings: false });
    expect(json.data.parameterCount).toBe(FIXTURE_PARAMS);
    expect(json.data.tensorCount).toBe(39);
    expect(json.data.validation.ok).toBe(true);
  });

  it('--json on the generated sharded BF16 checkpoint', () => {
    const { status, json } = cli(sharded);
    expect(status).toBe(0);
    expect(json.data.indexed).toBe(true);
    expect(json.data.dtypes[0].dtype).toBe('BF16');
  });

  it('a malformed shard: exit 3 and {ok:false, error:{code, message, exit:3}}', async () => {
    const d = join(dir, 'broken');
    await cp('fixtures/llama-mha-f32', d, { recursive: true });
    await writeFile(join(d, 'model.safetensors'), rawSafetensors('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', new Uint8Array(5)));
    const { status, json } = cli(d);
    expect(status).toBe(3);
    expect(json).toEqual({ ok: false, error: { code: 'SAFETENSORS_FORMAT', message: expect.stringContaining('truncated'), exit: 3 } });
  });
});
