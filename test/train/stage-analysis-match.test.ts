// Stage 1 uses an existing analysis/stats.safetensors only when it belongs to the run: the same
// model (fingerprint) and the same selection ratio. Otherwise it refuses (exit 2,
// ANALYSIS_MISMATCH) before writing anything, or with --force analyses the model again.
import { existsSync } from 'node:fs';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { runAnalysis } from '../../src/pipeline/analyze.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { sameModel } from '../../src/train/stage-analysis-match.js';
import { sampleIndices } from '../../src/train/data-split.js';
import { idSet, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir: root, cleanup } = tempRun('analysis-match');
afterAll(cleanup);

async function fingerprintOf(stats: string): Promise<string | undefined> {
  const f = await SafetensorsFile.open(stats);
  const fp = f.metadata.model_fingerprint;
  await f.close();
  return fp;
}

it('refuses an analysis of another model or ratio, and re-analyses with --force', async () => {
  const run = join(root, 'run');
  const train = await storyChunks(32);
  await runAnalysis({ model: STORIES, output: join(run, 'analysis'), data: train, batchSize: 4, ratio: 0.375, seed: 1, backend: 'wasm' });
  const stats = join(run, 'analysis', 'stats.safetensors');
  const original = await fingerprintOf(stats);

  // Same architecture and shapes, other weights: a copy whose config differs by one harmless key.
  const other = join(root, 'other-model');
  await cp(STORIES, other, { recursive: true });
  const config = JSON.parse(await readFile(join(other, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(other, 'config.json'), JSON.stringify({ ...config, _name_or_path: 'a fine-tuned copy' }));

  const options = (extra: Partial<StageOptions>): StageOptions => ({
    model: other, modelDir: other, run, stage: 1, method: 'apex', setting: 'operators', train, steps: 1, batchSize: 4, backend: 'wasm', expand: false, ...extra,
  });
  const refused = await runStage(options({})).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(UsageError);
  expect((refused as UsageError).code).toBe('ANALYSIS_MISMATCH');
  expect((refused as Error).message).toMatch(/stats\.safetensors was made from another model .*pass --force to analyse/);
  expect(existsSync(join(run, 'stages'))).toBe(false);
  expect(await fingerprintOf(stats)).toBe(original);

  const ratio = await runStage({ ...options({}), model: STORIES, modelDir: STORIES, ratio: 0.5 }).catch((e: unknown) => e);
  expect((ratio as UsageError).code).toBe('ANALYSIS_MISMATCH');
  expect((ratio as Error).message).toMatch(/counted units with ratio 0\.375, not --ratio 0\.5/);

  const warnings: string[] = [];
  const result = await runStage(options({ force: true, onWarning: (m) => warnings.push(m) }));
  expect(result.steps).toBe(1);
  expect(warnings.some((w) => /was made from another model .*analysing again \(--force\)/.test(w))).toBe(true);
  const renewed = await fingerprintOf(stats);
  expect(renewed).not.toBe(original);
  expect(renewed).toMatch(/^config\.json:[0-9a-f]{64},model\.safetensors:[0-9a-f]{64}$/);

  // The matching analysis is used as it is (no re-analysis, no warning).
  const again: string[] = [];
  await runStage(options({ force: true, onWarning: (m) => again.push(m) }));
  expect(again.filter((w) => /analysing again/.test(w))).toEqual([]);
  expect(await fingerprintOf(stats)).toBe(renewed);
});

it('an analysis recorded with the older index-only fingerprint of a sharded model still matches it', () => {
  const sha = (c: string) => c.repeat(64);
  const now = `config.json:${sha('a')},model.safetensors.index.json:${sha('b')},model-00001-of-00002.safetensors:${sha('c')},model-00002-of-00002.safetensors:${sha('d')}`;
  expect(sameModel(`config.json:${sha('a')},model.safetensors.index.json:${sha('b')}`, now)).toBe(true);
  expect(sameModel(now, now)).toBe(true);
  // Another config or index, or a full record with another shard, is another model.
  expect(sameModel(`config.json:${sha('e')},model.safetensors.index.json:${sha('b')}`, now)).toBe(false);
  expect(sameModel(now.replace(sha('d'), sha('f')), now)).toBe(false);
  // A single-file record never matches by its config alone.
  expect(sameModel(`config.json:${sha('a')}`, `config.json:${sha('a')},model.safetensors:${sha('c')}`)).toBe(false);
});

it('stage 1 without scores analyses a seeded sample of --calibration-samples training sequences, within --max-memory, the same as apex analyze --samples', async () => {
  const run = join(root, 'sampled');
  const train = await storyChunks(16); // 16 sequences
  expect(train.sequences.length).toBeGreaterThan(6);
  const heard: string[] = [];
  await runStage({
    model: STORIES, modelDir: STORIES, run, stage: 1, method: 'apex', setting: 'operators', train, steps: 1, batchSize: 2, backend: 'wasm', expand: false,
    calibrationSamples: 6, seed: 3, maxMemoryBytes: 3 * 2 ** 30, progress: (m) => heard.push(m),
  });
  expect(heard).toContain(`no ${join(run, "analysis/stats.safetensors")}: running the analysis first, on 6 of the ${train.sequences.length} training sequences (--calibration-samples)`);
  const analysis = JSON.parse(await readFile(join(run, 'analysis', 'analysis.json'), 'utf8')) as { sequences: number; data: { samples?: number }; memory: { budgetBytes: number } };
  expect(analysis.sequences).toBe(6);
  expect(analysis.data.samples).toBe(6);
  expect(analysis.memory.budgetBytes).toBe(3 * 2 ** 30);
  // apex analyze --samples 6 --seed 3 on the same data (the loader's seeded choice): the same statistics, bit for bit.
  const alone = join(root, 'alone');
  const chosen = idSet(sampleIndices(train.sequences.length, 6, 3).map((i) => train.sequences[i]!));
  await runAnalysis({ model: STORIES, output: alone, data: chosen, batchSize: 2, ratio: 0.375, seed: 3, backend: 'wasm' });
  const a = await SafetensorsFile.open(join(run, 'analysis', 'stats.safetensors'));
  const b = await SafetensorsFile.open(join(alone, 'stats.safetensors'));
  try {
    expect(a.tensors.map((t) => t.name)).toEqual(b.tensors.map((t) => t.name));
    for (const t of a.tensors) expect(Buffer.from(await a.readBytes(t.name)).equals(Buffer.from(await b.readBytes(t.name))), t.name).toBe(true);
  } finally {
    await a.close();
    await b.close();
  }
});

it('refuses counts made with another k (an analysis under --decay-k --stage 2 for stage 1; stage 2 selecting with another --ratio than stage 1 counted with), and --force re-analyses', async () => {
  const run = join(root, 'counting-k');
  const train = await storyChunks(32);
  // stories260K: 4 KV groups, 172 channels. Stage 2 under decaying K at ratio 0.375 counts fewer units than stage 1.
  await runAnalysis({ model: STORIES, output: join(run, 'analysis'), data: train, batchSize: 4, ratio: 0.375, seed: 1, backend: 'wasm', decayK: true, stage: 2 });
  const stats = join(run, 'analysis', 'stats.safetensors');
  const f = await SafetensorsFile.open(stats);
  const recorded = { head: f.metadata.head_k, channel: f.metadata.channel_k };
  await f.close();
  // k = ⌊n · ratio / 2⌋ at stage 1; decaying K at stage 2 takes fewer (the analysis records what it counted with).
  expect([Number(recorded.head), Number(recorded.channel)]).not.toEqual([Math.floor((4 * 0.375) / 2) || 1, Math.floor((172 * 0.375) / 2)]);
  const options = (extra: Partial<StageOptions>): StageOptions => ({
    model: STORIES, modelDir: STORIES, run, stage: 1, method: 'apex', setting: 'operators', train, steps: 1, batchSize: 4, backend: 'wasm', expand: false, ratio: 0.375, totalStages: 2, ...extra,
  });
  const refused = await runStage(options({})).catch((e: unknown) => e);
  expect((refused as UsageError).code).toBe('ANALYSIS_MISMATCH');
  expect((refused as Error).message).toContain(`counted the Top-k/Min-k ranks with k = ${recorded.head} head units and ${recorded.channel} channels per layer, but this stage selects 1 and 32`);
  expect(existsSync(join(run, 'stages'))).toBe(false);
  await runStage(options({ force: true, expand: true }));
  const g = await SafetensorsFile.open(stats);
  expect([g.metadata.head_k, g.metadata.channel_k]).toEqual(['1', '32']);
  await g.close();
  // Stage 1 trained at ratio 0.375 counted for stage 2 with its k: stage 2 at ratio 0.25 would select from counts of another k.
  const scores = await SafetensorsFile.open(join(run, 'stages', '1', 'scores.safetensors'));
  expect([scores.metadata.head_k, scores.metadata.channel_k]).toEqual(['1', '32']);
  await scores.close();
  const second = await runStage(options({ stage: 2, ratio: 0.25, model: join(run, 'stages', '1', 'model'), modelDir: join(run, 'stages', '1', 'model') })).catch((e: unknown) => e);
  expect((second as UsageError).code).toBe('SCORES_MISMATCH');
  expect((second as Error).message).toMatch(/scores\.safetensors counted the Top-k\/Min-k ranks with k = 1 head units and 32 channels per layer, but this stage selects 1 and 21 .*select with the --ratio and --decay-k stage 1 was trained with/);
});
