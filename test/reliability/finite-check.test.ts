// The load-time numerical guard (src/model/finite-check.ts): NaN/±Inf in a tensor read for a
// computation is a VerificationError (exit 6, NON_FINITE) naming the tensor, the file, how many
// values and the first one; it is applied by every checkpoint reader that feeds a computation
// (streaming layer loads, embedding and lm_head row blocks, whole-model loads), for f32 and bf16.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VerificationError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { assertFinite, readFiniteRowsFloat32 } from '../../src/model/finite-check.js';
import { loadModelWeights } from '../../src/model/model-weights.js';
import { CheckpointWeightSource, describeCheckpoint } from '../../src/model/weight-source.js';
import { tempDir } from '../io/helpers.js';
import { copyFixture } from '../pipeline/expand-fixtures.js';

function thrown(f: () => void): VerificationError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(VerificationError);
    return e as VerificationError;
  }
  throw new Error('expected a VerificationError');
}

describe('assertFinite', () => {
  it('accepts every finite float32, extremes included', () => {
    const v = Float32Array.from([0, -0, 1, -1, 3.4028234663852886e38, -3.4028234663852886e38, 1.4e-45, -1.4e-45]);
    expect(() => assertFinite(v, 't', 'f')).not.toThrow();
    expect(() => assertFinite(new Float32Array(0), 't', 'f')).not.toThrow();
  });

  it('counts every non-finite value and names the first, the tensor and the file', () => {
    const v = new Float32Array(40).fill(0.5);
    v[17] = NaN;
    v[20] = Infinity;
    v[39] = -Infinity;
    const e = thrown(() => assertFinite(v, 'model.layers.1.mlp.down_proj.weight', '/m/model.safetensors'));
    expect(e.exit).toBe(6);
    expect(e.code).toBe('NON_FINITE');
    expect(e.message).toMatch(/^model\.layers\.1\.mlp\.down_proj\.weight in \/m\/model\.safetensors: 3 non-finite values \(first at index 17: NaN\)/);
  });

  it('says Inf and -Inf, singular for one value, and offsets the index for a partial read', () => {
    const v = new Float32Array(8);
    v[3] = -Infinity;
    expect(thrown(() => assertFinite(v, 't', 'f')).message).toContain('t in f: 1 non-finite value (first at index 3: -Inf)');
    v[3] = Infinity;
    expect(thrown(() => assertFinite(v, 't', 'f', 1000)).message).toContain('(first at index 1003: Inf)');
  });
});

describe('checkpoint readers refuse non-finite weights', () => {
  const EMBED = 'model.embed_tokens.weight';
  const Q0 = 'model.layers.0.self_attn.q_proj.weight';
  const D = 64; // stories260K hidden size

  it('bf16 Inf in a layer weight: the streaming layer load and the whole-model load name it', async () => {
    const dir = join(await tempDir('apex-finite-'), 'bf16-inf');
    await copyFixture('stories260K', dir, 'BF16', new Map([[Q0, new Map([[9, 0x7f80]])]]));
    const checkpoint = await Checkpoint.open(dir);
    try {
      const { spec } = describeCheckpoint(checkpoint);
      const source = new CheckpointWeightSource(checkpoint, spec);
      const expected = `${Q0} in ${join(dir, 'model.safetensors')}: 1 non-finite value (first at index 9: Inf)`;
      await expect(source.loadLayer(0)).rejects.toThrow(expected);
      await expect(loadModelWeights(checkpoint)).rejects.toThrow(expected);
      (await source.loadLayer(1)).release(); // other layers still load
    } finally {
      await checkpoint.close();
    }
  });

  it('NaN in an embedding row: row reads that hold it fail with the tensor-wide index, others pass', async () => {
    const dir = join(await tempDir('apex-finite-'), 'f32-nan-embed');
    await copyFixture('stories260K', dir, 'F32', new Map([[EMBED, new Map([[3 * D + 2, 0x7fc00000]])]]));
    const checkpoint = await Checkpoint.open(dir);
    try {
      await expect(readFiniteRowsFloat32(checkpoint, EMBED, 2, 5)).rejects.toThrow(`${EMBED} (rows 2..4) in ${join(dir, 'model.safetensors')}: 1 non-finite value (first at index ${3 * D + 2}: NaN)`);
      expect((await readFiniteRowsFloat32(checkpoint, EMBED, 4, 6)).length).toBe(2 * D);
      const { spec } = describeCheckpoint(checkpoint);
      const source = new CheckpointWeightSource(checkpoint, spec);
      await expect(source.embeddingRows([1, 3])).rejects.toThrow(`${EMBED} in ${join(dir, 'model.safetensors')}`);
    } finally {
      await checkpoint.close();
    }
  });
});
