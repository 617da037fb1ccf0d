/**
 * runAnalysis on both reference models (wasm backend), against independent truth: the
 * per-sequence statistics of `transformers` in float64 (reference_outputs.safetensors), and
 * rank counts, averaged norms and selections recomputed here from those reference statistics
 * with a plain sort. Also the output folder's contract (files, schema, refusal without --force,
 * nothing written when refused).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResourceLimitError, UsageError, VerificationError } from '../../src/errors.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { readScoreFile } from '../../src/ops/score-file.js';
import { selectionSize } from '../../src/ops/selection.js';
import { ANALYSIS_SCHEMA, type AnalysisJson } from '../../src/pipeline/analysis-json.js';
import { runAnalysis, type AnalysisResult } from '../../src/pipeline/analyze.js';
import { loadSequences, type SequenceSet } from '../../src/train/data.js';
import { FIXTURES, loadReference, maxRelDiff, openModel, type FixtureName, type Reference } from '../model/helpers.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'apex-analyze-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The reference input_ids as an --input-ids file, loaded through the data pipeline. */
async function referenceData(name: FixtureName, ref: Reference): Promise<SequenceSet> {
  const file = join(tmp, `${name}-ids.safetensors`);
  const ids = new Int32Array(ref.B * ref.T);
  ref.sequences.forEach((s, b) => ids.set(s, b * ref.T));
  await writeSafetensors(file, [i32Tensor('input_ids', [ref.B, ref.T], ids)]);
  return loadSequences({ inputIds: file, seqLen: ref.T, seed: 0 });
}

/** Expected counts and norm averages from reference per-sequence sums of squares [B, X] of one layer. */
function expectedLayer(sumsq: Float32Array, B: number, X: number, groups: number, k: number, batch: number) {
  const perGroup = X / groups;
  const counts = new Array<number>(groups).fill(0);
  const normSums = new Array<number>(groups).fill(0);
  for (let start = 0; start < B; start += batch) {
    const norms = Array.from({ length: groups }, (_, g) => {
      let s = 0;
      for (let b = start; b < Math.min(B, start + batch); b++) for (let j = 0; j < perGroup; j++) s += sumsq[b * X + g * perGroup + j]!;
      return Math.sqrt(s);
    });
    const order = norms.map((_, u) => u);
    order.sort((a, b) => norms[b]! - norms[a]! || a - b).slice(0, k).forEach((u) => counts[u]!++);
    order.sort((a, b) => norms[a]! - norms[b]! || a - b).slice(0, k).forEach((u) => counts[u]!--);
    norms.forEach((n, u) => (normSums[u]! += n));
  }
  const micro = Math.ceil(B / batch);
  return { counts, normAvg: normSums.map((s) => s / micro) };
}

function layerSlice(all: Float32Array, layer: number, B: number, X: number): Float32Array {
  return all.subarray(layer * B * X, (layer + 1) * B * X);
}

for (const name of FIXTURES) {
  describe(`runAnalysis on ${name}`, () => {
    let ref: Reference;
    let result: AnalysisResult;
    let out: string;
    let batch: number;

    beforeAll(async () => {
      ref = await loadReference(name);
      // Several micro-batches, and for the 8 sequences of llama-mha-f32 a partial last one (3 + 3 + 2).
      batch = ref.B >= 8 ? 3 : 1;
      out = join(tmp, `${name}-analysis`);
      result = await runAnalysis({
        model: `fixtures/${name}`, output: out, data: await referenceData(name, ref), batchSize: batch, ratio: 0.375, seed: 0,
        backend: 'wasm', dumpStats: join(tmp, `${name}-dump.safetensors`), erank: true,
      });
    });

    it('--dump-stats reproduces head_sumsq and gate_act_sumsq within 1e-4 relative', async () => {
      const { spec, checkpoint } = await openModel(`fixtures/${name}`);
      await checkpoint.close();
      const f = await SafetensorsFile.open(result.dumpStats!);
      try {
        expect(f.info('head_sumsq').shape).toEqual([spec.numLayers, ref.B, spec.numHeads]);
        expect(f.info('gate_act_sumsq').shape).toEqual([spec.numLayers, ref.B, spec.intermediateSize]);
        expect(maxRelDiff(await f.readFloat32('head_sumsq'), ref.headSumsq)).toBeLessThanOrEqual(1e-4);
        expect(maxRelDiff(await f.readFloat32('gate_act_sumsq'), ref.gateSumsq)).toBeLessThanOrEqual(1e-4);
      } finally {
        await f.close();
      }
    });

    it('stats.safetensors holds the rank counts and norms recomputed from the reference statistics', async () => {
      const { spec, checkpoint } = await openModel(`fixtures/${name}`);
      await checkpoint.close();
      const scores = await readScoreFile(join(out, 'stats.safetensors'), spec);
      expect(scores.microBatches).toBe(Math.ceil(ref.B / batch));
      const H = spec.numHeads;
      const I = spec.intermediateSize;
      const headK = selectionSize(spec.numKvHeads, 0.375);
      const channelK = selectionSize(I, 0.375);
      for (let l = 0; l < spec.numLayers; l++) {
        const heads = expectedLayer(layerSlice(ref.headSumsq, l, ref.B, H), ref.B, H, spec.numKvHeads, headK, batch);
        const channels = expectedLayer(layerSlice(ref.gateSumsq, l, ref.B, I), ref.B, I, I, channelK, batch);
        const r = scores.layers[l]!;
        expect(Array.from(r.headScore)).toEqual(heads.counts);
        expect(Array.from(r.channelScore)).toEqual(channels.counts);
        expect(maxRelDiff(r.headNormAvg!, heads.normAvg)).toBeLessThanOrEqual(1e-4);
        expect(maxRelDiff(r.channelNormAvg!, channels.normAvg)).toBeLessThanOrEqual(1e-4);
        const perHead = expectedLayer(layerSlice(ref.headSumsq, l, ref.B, H), ref.B, H, H, 0, batch);
        expect(maxRelDiff(r.queryHeadNormAvg!, perHead.normAvg)).toBeLessThanOrEqual(1e-4);
      }
    });

    it('analysis.json records model, data, settings, selections and effective ranks', () => {
      const a = JSON.parse(readFileSync(join(out, 'analysis.json'), 'utf8')) as AnalysisJson;
      expect(a.schema).toBe(ANALYSIS_SCHEMA);
      expect(a.model.path).toBe(resolve(`fixtures/${name}`));
      const sha = createHash('sha256').update(readFileSync(`fixtures/${name}/model.safetensors`)).digest('hex');
      expect(a.model.files.find((f) => f.file === 'model.safetensors')?.sha256).toBe(sha);
      // The tokenizer and generation files beside them (provenance; the fixtures differ in which they have).
      const others = ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'].filter((f) => existsSync(`fixtures/${name}/${f}`));
      expect(others.length).toBeGreaterThan(0);
      expect(a.model.otherFiles).toEqual(others.map((f) => ({ file: f, bytes: statSync(`fixtures/${name}/${f}`).size, sha256: createHash('sha256').update(readFileSync(`fixtures/${name}/${f}`)).digest('hex') })));
      expect(a.data.kind).toBe('input-ids');
      expect(a.backend.name).toBe('wasm');
      expect(a.settings).toMatchObject({ ratio: 0.375, score: 'rank', batchSize: batch, seed: 0, reverse: false, randomSelection: false });
      expect(a.sequences).toBe(ref.B);
      expect(a.tokens).toBe(ref.B * ref.T);
      expect(Math.abs(a.calibration.meanNll - ref.meanNll)).toBeLessThanOrEqual(1e-4);
      for (const l of a.layers) {
        // P = k highest scores (ties by index), N = k lowest of the rest.
        const byScore = (s: number[], k: number) => {
          const order = s.map((_, u) => u);
          const P = [...order].sort((x, y) => s[y]! - s[x]! || x - y).slice(0, k);
          const N = order.filter((u) => !P.includes(u)).sort((x, y) => s[x]! - s[y]! || x - y).slice(0, k);
          return { P, N };
        };
        expect({ P: l.heads.P, N: l.heads.N }).toEqual(byScore(l.heads.score, l.heads.k));
        expect({ P: l.channels.P, N: l.channels.N }).toEqual(byScore(l.channels.score, l.channels.k));
        expect(l.heads.unit).toBe(name === 'stories260K' ? 'kv-group' : 'head');
      }
      expect(a.erank!.layers).toHaveLength(a.model.config.numLayers);
      const q = a.erank!.layers[0]!.erank.q_proj;
      expect(q).toBeGreaterThan(1);
      expect(q).toBeLessThanOrEqual(a.model.config.hiddenSize);
      expect(result.summary).toContain(name === 'stories260K' ? 'P groups' : 'P heads');
    });

    it('writes the report files and nothing else', () => {
      expect(readdirSync(out).sort()).toEqual(['analysis.json', 'channels-norm.svg', 'channels-score.svg', 'erank.svg', 'heads-norm.svg', 'heads-score.svg', 'index.html', 'stats.safetensors']);
      const html = readFileSync(join(out, 'index.html'), 'utf8');
      expect(html).toContain('<svg');
      expect(html).toContain('Effective rank');
      expect(readdirSync(tmp).filter((f) => f.includes('.tmp-') || f.endsWith('.lock'))).toEqual([]);
    });
  });
}

describe('refusals leave nothing behind', () => {
  let data: SequenceSet;
  beforeAll(async () => {
    data = await referenceData('stories260K', await loadReference('stories260K'));
  });
  const base = () => ({ model: 'fixtures/stories260K', data, batchSize: 2, ratio: 0.375, seed: 0, backend: 'wasm' });

  it('an existing analysis is kept unless force is given', async () => {
    const out = join(tmp, 'existing');
    await runAnalysis({ ...base(), output: out });
    writeFileSync(join(out, 'marker'), 'x');
    await expect(runAnalysis({ ...base(), output: out })).rejects.toThrow(UsageError);
    expect(existsSync(join(out, 'marker'))).toBe(true);
    await runAnalysis({ ...base(), output: out, force: true });
    expect(existsSync(join(out, 'marker'))).toBe(false);
  });

  it('--base measures the effective rank of ΔW (0 against itself) and refuses a base of another shape', async () => {
    const out = join(tmp, 'delta');
    const r = await runAnalysis({ ...base(), output: out, erank: true, base: 'fixtures/stories260K' });
    expect(r.analysis.erank!.base).toBe(resolve('fixtures/stories260K'));
    for (const l of r.analysis.erank!.layers) {
      expect(Object.values(l.delta!)).toEqual([0, 0, 0, 0, 0, 0, 0]);
      expect(Math.min(...Object.values(l.erank))).toBeGreaterThan(1);
    }
    const other = join(tmp, 'delta-mismatch');
    await expect(runAnalysis({ ...base(), output: other, erank: true, base: 'fixtures/llama-mha-f32' })).rejects.toThrow(/does not have the model's shape/);
    expect(existsSync(other)).toBe(false);
  });

  /** A copy of stories260K with layer 2's gate_proj changed by `edit` (float32 view of its bytes). */
  async function gateEdited(name: string, edit: (w: Float32Array) => void): Promise<string> {
    const model = join(tmp, name);
    mkdirSync(model);
    copyFileSync('fixtures/stories260K/config.json', join(model, 'config.json'));
    const src = await SafetensorsFile.open('fixtures/stories260K/model.safetensors');
    try {
      const tensors = [];
      for (const t of src.tensors) {
        const bytes = (await src.readBytes(t.name)).slice();
        if (t.name === 'model.layers.2.mlp.gate_proj.weight') edit(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
        tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: bytes });
      }
      await writeSafetensors(join(model, 'model.safetensors'), tensors);
    } finally {
      await src.close();
    }
    return model;
  }

  it('a NaN weight stops with a VerificationError naming the tensor and its file, writing nothing', async () => {
    const model = await gateEdited('nan-model', (w) => { w[0] = NaN; });
    const out = join(tmp, 'nan-analysis');
    const err = await runAnalysis({ ...base(), model, output: out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as Error).message).toContain(`model.layers.2.mlp.gate_proj.weight in ${join(model, 'model.safetensors')}: 1 non-finite value (first at index 0: NaN)`);
    expect(existsSync(out)).toBe(false);
  });

  it('finite weights whose activations overflow stop with a VerificationError naming layer and kind, writing nothing', async () => {
    // Two gate rows of ±1e30: one of the two pre-activations is a huge positive number, whose
    // square (the channel's sum of squares) overflows float32.
    const model = await gateEdited('overflow-model', (w) => {
      const D = w.length / 172;
      w.fill(1e30, 0, D);
      w.fill(-1e30, D, 2 * D);
    });
    const out = join(tmp, 'overflow-analysis');
    const err = await runAnalysis({ ...base(), model, output: out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as Error).message).toMatch(/^layer 2: FFN gate activation/);
    expect(existsSync(out)).toBe(false);
  });

  it('a memory limit below the estimate refuses before writing anything', async () => {
    const out = join(tmp, 'too-small');
    const err = await runAnalysis({ ...base(), output: out, maxMemory: 1_000_000, dumpStats: join(tmp, 'no-dump.safetensors') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(tmp, 'no-dump.safetensors'))).toBe(false);
  });
});
