// `--score avg` on a score file without the averaged norms (norm_avg tensors) says which file
// lacks them and how to get one that has them.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { readScoreFile, writeScoreFile, type LayerScoreRecord } from '../../src/ops/score-file.js';
import { requireAveragedNorms } from '../../src/train/stage-selection.js';

const spec: ModelSpec = {
  architecture: 'LlamaForCausalLM', numLayers: 2, hiddenSize: 64, numHeads: 8, numKvHeads: 4, headDim: 8, intermediateSize: 12,
  vocabSize: 512, tieWordEmbeddings: true, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' },
  qkvBias: false, oBias: false, mlpBias: false, maxPositionEmbeddings: 512, eosTokenIds: [2],
};

describe('--score avg needs the norm_avg tensors', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'apex-avg-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

  const record = (layer: number, norms: boolean): LayerScoreRecord => ({
    layer,
    headScore: new Float32Array(spec.numKvHeads),
    channelScore: new Float32Array(spec.intermediateSize),
    ...(norms ? { headNormAvg: new Float32Array(spec.numKvHeads).fill(1), channelNormAvg: new Float32Array(spec.intermediateSize).fill(1) } : {}),
  });

  it('names the file, the layer and the remedy for stage 1 and for a later stage', async () => {
    await mkdir(join(dir, 'analysis'));
    const path = join(dir, 'analysis', 'stats.safetensors');
    await writeScoreFile(path, [record(0, true), record(1, false)], 4);
    const { layers } = await readScoreFile(path, spec);
    expect(() => requireAveragedNorms(layers, path, 1)).toThrow(UsageError);
    expect(() => requireAveragedNorms(layers, path, 1)).toThrow(
      `--score avg needs the averaged norms (the norm_avg tensors), which ${path} does not hold for layer 1 ` +
        `(apex writes them in every score file, so this one was made or edited elsewhere): re-create it with \`apex analyze <model> -o ${join(dir, 'analysis')} --force\`, ` +
        `or delete the folder ${join(dir, 'analysis')} so that stage 1 runs the analysis again; or select with --score rank`,
    );
    expect(() => requireAveragedNorms(layers, path, 3)).toThrow(/: train stage 2 again with --force, which records them in it; or select with --score rank$/);
  });

  it('accepts a file apex wrote with its norms', async () => {
    const path = join(dir, 'scores.safetensors');
    await writeScoreFile(path, [record(0, true), record(1, true)], 4);
    const { layers } = await readScoreFile(path, spec);
    expect(() => requireAveragedNorms(layers, path, 2)).not.toThrow();
  });
});
