import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { ApexFileFormatError, type LoadedTensor } from '../../src/ops/apex-tensor-file.js';
import { operatorMetadata, operatorTensors, parseOperatorFile, readOperatorFile, writeOperatorFile, type OperatorFileMeta } from '../../src/ops/operator-file.js';
import { initLayerOperators, type LayerOperators } from '../../src/ops/operator-init.js';
import { Rng } from '../../src/util/rng.js';

// stories260K-shaped: 5 layers, 8 query heads / 4 KV heads of 8, I = 172.
const spec: ModelSpec = {
  architecture: 'LlamaForCausalLM', numLayers: 5, hiddenSize: 64, numHeads: 8, numKvHeads: 4, headDim: 8, intermediateSize: 172,
  vocabSize: 512, tieWordEmbeddings: true, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' },
  qkvBias: false, oBias: false, mlpBias: false, maxPositionEmbeddings: 512, eosTokenIds: [2],
};
const meta: OperatorFileMeta = { apexVersion: '0.1.0', stage: 2, ratio: 0.375, setting: 'structured', seed: 17 };
const sel = (P: number[], N: number[], E: number[] = []) => ({ P: Int32Array.from(P), N: Int32Array.from(N), E: Int32Array.from(E) });

function layers(): LayerOperators[] {
  const rng = new Rng(4);
  return [
    initLayerOperators(0, { heads: sel([3], [1], [0]), channels: sel([5, 9, 100], [7, 1, 171], [2]) }, spec.headDim, rng),
    initLayerOperators(2, { channels: sel([0, 1], [2, 3]) }, spec.headDim, rng),
    initLayerOperators(4, { heads: sel([2], [0]) }, spec.headDim, rng),
  ];
}

/** The tensors of a valid file, as the reader would load them. */
function loaded(ls: LayerOperators[] = layers()): Map<string, LoadedTensor> {
  return new Map(operatorTensors(ls, spec.headDim).map((t) => {
    const bytes = t.data as Uint8Array;
    const values = t.dtype === 'I32' ? new Int32Array(bytes.slice().buffer) : new Float32Array(bytes.slice().buffer);
    return [t.name, { dtype: t.dtype as 'F32' | 'I32', shape: t.shape, values }];
  }));
}

function ruleOf(fn: () => unknown): { rule: string; tensor: string | undefined } {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ApexFileFormatError);
    expect(e).toBeInstanceOf(InputError);
    return { rule: (e as ApexFileFormatError).rule, tensor: (e as ApexFileFormatError).tensor };
  }
  throw new Error('expected a format error');
}

describe('operators.safetensors', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'apex-ops-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

  it('writes the documented names, dtypes, shapes and metadata, and reads them back', async () => {
    const path = join(dir, 'operators.safetensors');
    const ls = layers();
    await writeOperatorFile(path, ls, meta, spec.headDim);
    const f = await SafetensorsFile.open(path);
    const shapes = Object.fromEntries(f.tensors.map((t) => [t.name, `${t.dtype}[${t.shape}]`]));
    expect(f.metadata).toEqual({ format: 'pt', apex_format: 'operators', apex_version: '0.1.0', stage: '2', ratio: '0.375', setting: 'structured', seed: '17' });
    await f.close();
    expect(shapes).toEqual({
      // layer 0 heads: k = 1, n = k·d_h = 8 → nb = 2, bs = 4
      'model.layers.0.self_attn.apex.P': 'I32[1]', 'model.layers.0.self_attn.apex.N': 'I32[1]', 'model.layers.0.self_attn.apex.E': 'I32[1]',
      'model.layers.0.self_attn.apex.B1': 'F32[2,4,4]', 'model.layers.0.self_attn.apex.B2': 'F32[2,4,4]',
      'model.layers.0.self_attn.apex.a': 'F32[8]', 'model.layers.0.self_attn.apex.b_v': 'F32[8]',
      // layer 0 channels: k = 3 → nb = 1, bs = 3
      'model.layers.0.mlp.apex.P': 'I32[3]', 'model.layers.0.mlp.apex.N': 'I32[3]', 'model.layers.0.mlp.apex.E': 'I32[1]',
      'model.layers.0.mlp.apex.B1': 'F32[1,3,3]', 'model.layers.0.mlp.apex.B2': 'F32[1,3,3]',
      'model.layers.0.mlp.apex.a': 'F32[3]', 'model.layers.0.mlp.apex.b_gate': 'F32[3]', 'model.layers.0.mlp.apex.b_up': 'F32[3]',
      'model.layers.2.mlp.apex.P': 'I32[2]', 'model.layers.2.mlp.apex.N': 'I32[2]',
      'model.layers.2.mlp.apex.B1': 'F32[1,2,2]', 'model.layers.2.mlp.apex.B2': 'F32[1,2,2]',
      'model.layers.2.mlp.apex.a': 'F32[2]', 'model.layers.2.mlp.apex.b_gate': 'F32[2]', 'model.layers.2.mlp.apex.b_up': 'F32[2]',
      'model.layers.4.self_attn.apex.P': 'I32[1]', 'model.layers.4.self_attn.apex.N': 'I32[1]',
      'model.layers.4.self_attn.apex.B1': 'F32[2,4,4]', 'model.layers.4.self_attn.apex.B2': 'F32[2,4,4]',
      'model.layers.4.self_attn.apex.a': 'F32[8]', 'model.layers.4.self_attn.apex.b_v': 'F32[8]',
    });
    const back = await readOperatorFile(path, spec);
    expect(back.meta).toEqual(meta);
    expect(back.layers).toEqual(ls);
  });

  it('validates against the model it is read for', async () => {
    const path = join(dir, 'other.safetensors');
    await writeOperatorFile(path, layers(), meta, spec.headDim);
    await expect(readOperatorFile(path, { ...spec, numKvHeads: 2 })).rejects.toThrow(/index-range/);
  });

  const md = operatorMetadata(meta);
  const check = (tensors: Map<string, LoadedTensor>, metadata: Record<string, string> = md) => ruleOf(() => parseOperatorFile('ops.safetensors', metadata, tensors, spec));
  const edit = (name: string, t: Partial<LoadedTensor>) => {
    const m = loaded();
    m.set(name, { ...m.get(name)!, ...t });
    return m;
  };
  const A = 'model.layers.0.self_attn.apex.';
  const F = 'model.layers.0.mlp.apex.';

  it('validates metadata', () => {
    expect(check(loaded(), { ...md, apex_format: 'scores' }).rule).toBe('metadata-apex_format');
    expect(check(loaded(), { ...md, stage: '0' }).rule).toBe('metadata-stage');
    expect(check(loaded(), { ...md, ratio: 'abc' }).rule).toBe('metadata-ratio');
    expect(check(loaded(), { ...md, setting: 'lora' }).rule).toBe('metadata-setting');
    expect(check(loaded(), { ...md, seed: '1.5' }).rule).toBe('metadata-seed');
    const { apex_version: _, ...noVersion } = md;
    expect(check(loaded(), noVersion).rule).toBe('metadata-apex_version');
  });

  it('validates names, layers, dtypes and completeness', () => {
    const extra = loaded();
    extra.set('model.layers.0.mlp.apex.b_v', extra.get(`${A}b_v`)!);
    expect(check(extra)).toEqual({ rule: 'tensor-name', tensor: 'model.layers.0.mlp.apex.b_v' });
    const stray = loaded();
    stray.set('model.layers.01.mlp.apex.P', stray.get(`${F}P`)!);
    expect(check(stray).rule).toBe('tensor-name');
    const far = loaded();
    far.set('model.layers.5.mlp.apex.P', far.get(`${F}P`)!);
    expect(check(far)).toEqual({ rule: 'layer-range', tensor: 'model.layers.5.mlp.apex.P' });
    expect(check(edit(`${A}P`, { dtype: 'F32', values: Float32Array.of(3) })).rule).toBe('dtype');
    const missing = loaded();
    missing.delete(`${F}b_up`);
    expect(check(missing)).toEqual({ rule: 'missing-tensor', tensor: `${F}b_up` });
  });

  it('validates indices: range, duplicates, |P| = |N|, P ∩ N = ∅, E disjoint', () => {
    expect(check(edit(`${A}P`, { values: Int32Array.of(4) }))).toEqual({ rule: 'index-range', tensor: `${A}P` }); // 4 KV heads
    expect(check(edit(`${F}N`, { values: Int32Array.of(7, 1, 172) })).rule).toBe('index-range');
    expect(check(edit(`${F}N`, { values: Int32Array.of(7, 7, 171) })).rule).toBe('index-duplicate');
    expect(check(edit(`${F}N`, { values: Int32Array.of(7, 5, 171) }))).toEqual({ rule: 'pn-overlap', tensor: `${F}N` });
    expect(check(edit(`${F}N`, { shape: [2], values: Int32Array.of(7, 1) })).rule).toBe('pn-size');
    expect(check(edit(`${F}E`, { values: Int32Array.of(9) })).rule).toBe('e-overlap');
    expect(check(edit(`${A}P`, { shape: [0], values: new Int32Array(0) })).rule).toBe('index-shape');
  });

  it('validates the Monarch factor shapes and vector sizes against k, d_h and the nb/bs rule', () => {
    expect(check(edit(`${A}B1`, { shape: [4, 2, 2], values: new Float32Array(16) }))).toEqual({ rule: 'monarch-shape', tensor: `${A}B1` });
    expect(check(edit(`${A}a`, { shape: [1], values: Float32Array.of(1) })).rule).toBe('vector-shape'); // n = k·d_h = 8, not k
    expect(check(edit(`${F}b_gate`, { shape: [4], values: new Float32Array(4) })).rule).toBe('vector-shape');
    expect(check(edit(`${F}a`, { values: Float32Array.of(1, Number.NaN, 1) }))).toEqual({ rule: 'finite', tensor: `${F}a` });
    expect(() => parseOperatorFile('ops.safetensors', md, edit(`${F}a`, { values: Float32Array.of(1, Number.NaN, 1) }), spec)).toThrow(`ops.safetensors: tensor '${F}a': holds NaN or Inf: 1 non-finite value (first at index 1: NaN) (rule: finite)`);
  });
});
