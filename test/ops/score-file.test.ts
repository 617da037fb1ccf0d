import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { ApexFileFormatError } from '../../src/ops/apex-tensor-file.js';
import { RankCountRecorder } from '../../src/ops/rank-counts.js';
import { readScoreFile, scoreRecordsFromRecorder, selectionInputs, writeScoreFile } from '../../src/ops/score-file.js';
import { selectModel } from '../../src/ops/selection.js';
import { writeSafetensors, f32Tensor } from '../../src/io/safetensors-writer.js';

const spec: ModelSpec = {
  architecture: 'LlamaForCausalLM', numLayers: 2, hiddenSize: 8, numHeads: 4, numKvHeads: 2, headDim: 2, intermediateSize: 6,
  vocabSize: 16, tieWordEmbeddings: false, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' },
  qkvBias: false, oBias: false, mlpBias: false, maxPositionEmbeddings: 64, eosTokenIds: [],
};

function recorder(): RankCountRecorder {
  const rec = new RankCountRecorder({ numLayers: 2, numHeads: 4, numKvHeads: 2, intermediateSize: 6, headK: 1, channelK: 2 });
  rec.record(0, [1, 3, 4, 5], [1, 4, 9, 16, 25, 36]);
  rec.record(1, [4, 0, 0, 1], [0, 1, 0, 1, 0, 1]);
  return rec;
}

describe('score files', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'apex-scores-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

  it('round-trips scores and norms under the §7 names', async () => {
    const path = join(dir, 'scores.safetensors');
    const rec = recorder();
    await writeScoreFile(path, scoreRecordsFromRecorder(rec), 1, { stage: '1' });
    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: 'pt', apex_format: 'scores', micro_batches: '1', stage: '1' });
    expect(Object.fromEntries(f.tensors.filter((t) => t.name.startsWith('model.layers.0.')).map((t) => [t.name, `${t.dtype}[${t.shape}]`]))).toEqual({
      'model.layers.0.self_attn.apex.score': 'F32[2]',
      'model.layers.0.self_attn.apex.norm_avg': 'F32[2]',
      'model.layers.0.self_attn.apex.head_norm_avg': 'F32[4]',
      'model.layers.0.mlp.apex.score': 'F32[6]',
      'model.layers.0.mlp.apex.norm_avg': 'F32[6]',
    });
    await f.close();
    const back = await readScoreFile(path, spec);
    expect(back.microBatches).toBe(1);
    expect(Array.from(back.layers[0]!.headScore)).toEqual([-1, 1]);
    expect(Array.from(back.layers[0]!.channelScore)).toEqual([-1, -1, 0, 0, 1, 1]);
    expect(Array.from(back.layers[0]!.headNormAvg!)).toEqual([2, 3]);
    // The same selection from the file as from the recorder.
    const fromRecorder = selectModel(scoreRecordsFromRecorder(rec).map((r, i) => ({
      heads: { rank: rec.headScores(i), avg: r.headNormAvg! }, channels: { rank: rec.channelScores(i), avg: r.channelNormAvg! },
    })), { stage: 1 });
    expect(selectModel(selectionInputs(back.layers), { stage: 1 })).toEqual(fromRecorder);
  });

  it('requires every layer and checks shapes', async () => {
    const partial = join(dir, 'partial.safetensors');
    await writeSafetensors(partial, [f32Tensor('model.layers.0.self_attn.apex.score', [2], Float32Array.of(1, 2)), f32Tensor('model.layers.0.mlp.apex.score', [6], new Float32Array(6))], { apex_format: 'scores', micro_batches: '3' });
    await expect(readScoreFile(partial, spec)).rejects.toMatchObject({ rule: 'missing-tensor', tensor: 'model.layers.1.self_attn.apex.score' });
    const wrong = join(dir, 'wrong.safetensors');
    await writeSafetensors(wrong, [f32Tensor('model.layers.0.self_attn.apex.score', [4], new Float32Array(4))], { apex_format: 'scores', micro_batches: '3' });
    await expect(readScoreFile(wrong, spec)).rejects.toBeInstanceOf(ApexFileFormatError);
    await expect(readScoreFile(wrong, spec)).rejects.toMatchObject({ rule: 'shape' });
    const notScores = join(dir, 'not.safetensors');
    await writeSafetensors(notScores, [], { apex_format: 'operators' });
    await expect(readScoreFile(notScores, spec)).rejects.toMatchObject({ rule: 'metadata-apex_format' });
  });
});
