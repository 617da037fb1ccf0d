/**
 * `apex run` end to end on a micro config (2 APEX stages + the vanilla baseline, a few steps of
 * 4 × 32 tokens on the fixture model, wasm): the §7 layout with loadable checkpoints, the
 * summary and report, resume doing no work, a changed config refused, --force redoing, and an
 * interrupted run resuming to the same final weights as an uninterrupted one.
 */
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { InterruptedError, UsageError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { acquireOutputLock } from '../../src/io/output-lock.js';
import { selectBackend } from '../../src/model/backend.js';
import { disposeModelWeights, forwardLogits, loadModelWeights } from '../../src/model/model-weights.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { loadRunData } from '../../src/pipeline/run-data.js';
import { apexVersion } from '../../src/pipeline/analysis-provenance.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { planRun } from '../../src/pipeline/run-plan.js';
import { renderRunReport } from '../../src/pipeline/run-report.js';
import type { RunSummary } from '../../src/pipeline/run-summary.js';
import { resolveConfig } from '../../src/run/config.js';
import { configFolder, fingerprint, maxWeightDifference, MICRO_DATA, microConfig, MODEL } from './run-fixtures.js';

async function run(file: string, options: { overrides?: string[]; force?: boolean; signal?: AbortSignal; onStatus?: (m: string) => void; lines?: string[] } = {}) {
  const resolved = await resolveConfig({ file, overrides: options.overrides ?? [], cwd: path.dirname(file) });
  const lines: string[] = options.lines ?? [];
  const summary = await runPipeline({
    resolved,
    ...(options.force ? { force: true } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    log: (m) => lines.push(m),
    status: (m) => { lines.push(m); options.onStatus?.(m); },
    onWarning: (m) => lines.push(`warning: ${m}`),
  });
  return { summary, lines };
}

/** Mean next-token NLL of a checkpoint over sequences, with the resident (non-streaming) forward and a float64 log-softmax. */
async function residentMeanNll(dir: string, sequences: readonly Int32Array[]): Promise<number> {
  const checkpoint = await Checkpoint.open(dir);
  const { model } = await loadModelWeights(checkpoint);
  try {
    let sum = 0;
    let count = 0;
    for (const seq of sequences) {
      const logits = tf.tidy(() => forwardLogits(model, tf.tensor2d(seq, [1, seq.length], 'int32')).dataSync());
      const V = model.spec.vocabSize;
      for (let t = 0; t + 1 < seq.length; t++) {
        const row = logits.subarray(t * V, (t + 1) * V);
        let max = -Infinity;
        for (const v of row) max = Math.max(max, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - max);
        sum -= row[seq[t + 1]!]! - max - Math.log(z);
        count++;
      }
    }
    return sum / count;
  } finally {
    disposeModelWeights(model);
    await checkpoint.close();
  }
}

function stageRecord(run: string, rel: string): { details: { seeds: unknown; lr_plan: unknown; data: { train: unknown }; steps: number; method: string } } {
  return JSON.parse(readFileSync(path.join(run, rel, 'apex_run.json'), 'utf8'));
}

describe('apex run (library, micro config)', () => {
  let cfg: { dir: string; file: string };
  let out: string;
  let first: RunSummary;

  beforeAll(async () => {
    await selectBackend('wasm');
    cfg = configFolder(microConfig());
    out = path.join(cfg.dir, 'apex-run');
    first = (await run(cfg.file)).summary;
  });

  it('writes the run folder layout of APEX-METHOD §7, for the run and for the baseline', () => {
    for (const f of ['run.json', 'summary.json', 'index.html', 'analysis/analysis.json', 'analysis/stats.safetensors', 'analysis/index.html']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    for (const n of [1, 2]) {
      for (const f of ['operators.safetensors', 'trained.safetensors', 'scores.safetensors', 'metrics.jsonl', 'apex_run.json', 'model/config.json', 'model/model.safetensors']) {
        expect(existsSync(path.join(out, 'stages', String(n), f)), `stages/${n}/${f}`).toBe(true);
      }
      for (const f of ['trained.safetensors', 'metrics.jsonl', 'apex_run.json', 'model/model.safetensors']) {
        expect(existsSync(path.join(out, 'baseline/vanilla/stages', String(n), f)), `baseline stage ${n}/${f}`).toBe(true);
      }
      expect(existsSync(path.join(out, 'baseline/vanilla/stages', String(n), 'operators.safetensors'))).toBe(false);
    }
  });

  it('every stage model is a loadable checkpoint whose perplexity is the one reported (checked by an independent forward)', async () => {
    const resolved = await resolveConfig({ file: cfg.file, cwd: cfg.dir });
    const data = await loadRunData(resolved.config, await loadTokenizer(MODEL));
    expect(data.eval.sequences.length).toBe(6);
    const checks: [string, number][] = [
      [MODEL, first.before.meanNll],
      ...first.stages.map((s) => [path.join(out, s.model), s.eval.meanNll] as [string, number]),
      ...first.baseline!.stages.map((s) => [path.join(out, s.model), s.eval.meanNll] as [string, number]),
    ];
    for (const [dir, reported] of checks) expect(await residentMeanNll(dir, data.eval.sequences), dir).toBeCloseTo(reported, 4);
    // the stages changed the model, and the two lines are different models
    expect(first.stages[1]!.eval.meanNll).not.toBe(first.before.meanNll);
    expect(await maxWeightDifference(path.join(out, 'stages/2/model'), path.join(out, 'baseline/vanilla/stages/2/model'))).toBeGreaterThan(0);
  });

  it('summary.json holds the config, hashes, data, and per stage perplexity, tokens, steps and trainable parameters', () => {
    const s = JSON.parse(readFileSync(path.join(out, 'summary.json'), 'utf8')) as RunSummary;
    expect(s.schema).toBe('apex.run/1');
    expect(s.configHash).toMatch(/^[0-9a-f]{64}$/);
    expect(s.begunByApexVersion).toBe(s.apexVersion);
    // The stages' own records say which command made them (apex expand --run still accepts them).
    expect(JSON.parse(readFileSync(path.join(out, 'stages/1/apex_run.json'), 'utf8')).command).toBe('run');
    expect(s.config.stages.count).toBe(2);
    expect(s.backend.name).toBe('wasm');
    expect(s.seed).toBe(0);
    expect(s.baseModel.path).toBe(MODEL);
    expect(s.baseModel.files.map((f) => f.file)).toEqual(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors']);
    expect(s.baseModel.files[1]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(s.data.train.split).toBe('train');
    expect(s.data.eval.split).toBe('heldout');
    expect(s.data.calibration?.samples).toBe(8);
    expect(s.stages.map((x) => [x.stage, x.steps, x.tokens])).toEqual([[1, 4, 512], [2, 4, 512]]);
    expect(s.baseline!.stages.map((x) => [x.stage, x.steps, x.tokens])).toEqual([[1, 4, 512], [2, 4, 512]]);
    // full APEX trains every weight plus the operators; vanilla exactly every weight
    expect(s.stages[0]!.trainableFraction).toBeGreaterThan(1);
    expect(s.baseline!.stages[0]!.trainableParams).toBe(s.baseModel.parameters);
    expect(s.baseline!.stages[0]!.trainableFraction).toBe(1);
    expect(s.perplexity).toEqual({
      before: s.before.perplexity,
      stages: s.stages.map((x) => x.eval.perplexity),
      final: s.stages[1]!.eval.perplexity,
      baseline: s.baseline!.stages[1]!.eval.perplexity,
      baselineStages: s.baseline!.stages.map((x) => x.eval.perplexity),
    });
    expect(s.invocation.start).toBe('new');
    expect(s.invocation.skipped).toEqual([]);
  });

  it('trains the baseline on the same data order and learning-rate plan as APEX', () => {
    for (const n of [1, 2]) {
      const apex = stageRecord(out, `stages/${n}`).details;
      const vanilla = stageRecord(out, `baseline/vanilla/stages/${n}`).details;
      expect([apex.method, vanilla.method]).toEqual(['apex', 'vanilla']);
      expect(vanilla.seeds).toEqual(apex.seeds);
      expect(vanilla.lr_plan).toEqual(apex.lr_plan);
      expect(vanilla.data.train).toEqual(apex.data.train);
    }
  });

  it('index.html shows the perplexities, the curves, the heatmaps and links to the stage models', () => {
    const html = readFileSync(path.join(out, 'index.html'), 'utf8');
    expect(html).toContain('Held-out perplexity');
    expect(html).toContain('Training curves');
    expect(html).toContain('Rank counts recorded during stage 2');
    expect(html).toContain('href="stages/1/model/"');
    expect(html).toContain('href="baseline/vanilla/stages/2/model/"');
    expect(html).toContain('href="analysis/index.html"');
    expect(html.match(/<svg[\s>]/g)?.length).toBeGreaterThanOrEqual(5);
    expect(html).toContain(first.perplexity.final.toPrecision(4));
    // The stages row says what was trained (4 steps of 4 × 32 tokens) and the time row what it sums.
    expect(html).toContain('2 × 4 steps = 512 tokens per stage; each step 4 × 32 tokens, lr 0.001');
    expect(html).toContain('time in recorded steps');
    // A token budget rounds up to whole steps: the row gives both; accumulation is named.
    const tokens = { ...first, config: { ...first.config, stages: { ...first.config.stages, steps: null, tokens: 500 }, optimizer: { ...first.config.optimizer, grad_accum: 2 } } } as RunSummary;
    const other = renderRunReport({ summary: tokens, curves: [], stageScores: [], headUnit: 'head' });
    expect(other).toContain('2 × 4 steps = 512 tokens per stage (asked: 500 tokens); each step 2 micro-batches of 4 × 32 tokens');
  });

  it('a rerun of the same config does no work and leaves every stage output untouched', async () => {
    const stagesBefore = fingerprint(path.join(out, 'stages'));
    const baselineBefore = fingerprint(path.join(out, 'baseline'));
    const analysisBefore = fingerprint(path.join(out, 'analysis'));
    const { summary, lines } = await run(cfg.file);
    expect(fingerprint(path.join(out, 'stages'))).toEqual(stagesBefore);
    expect(fingerprint(path.join(out, 'baseline'))).toEqual(baselineBefore);
    expect(fingerprint(path.join(out, 'analysis'))).toEqual(analysisBefore);
    expect(summary.invocation.start).toBe('resumed');
    expect(summary.invocation.skipped).toEqual([
      'eval/before', 'analysis',
      'run/stage/1', 'run/eval/1', 'run/stage/2', 'run/eval/2',
      'baseline/vanilla/stage/1', 'baseline/vanilla/eval/1', 'baseline/vanilla/stage/2', 'baseline/vanilla/eval/2',
    ]);
    expect(lines).toContain('APEX stage 2: complete, skipped (stages/2)');
    expect(lines.some((l) => l.startsWith('loading data'))).toBe(false);
    expect(summary.perplexity).toEqual(first.perplexity);
  });

  it('a rerun with another eval.batch_size (results-neutral) reuses every step, notes the change and records each evaluation\'s batch', async () => {
    const stagesBefore = fingerprint(path.join(out, 'stages'));
    const { summary, lines } = await run(cfg.file, { overrides: ['eval.batch_size=2'] });
    expect(summary.invocation.start).toBe('resumed');
    expect(summary.invocation.skipped).toHaveLength(10);
    expect(fingerprint(path.join(out, 'stages'))).toEqual(stagesBefore);
    expect(summary.perplexity).toEqual(first.perplexity);
    expect(summary.configHash).toBe(first.configHash);
    expect(lines.filter((l) => l.startsWith(`warning: eval.batch_size is 2 now, 6 when ${out} last ran`))).toHaveLength(1);
    // The evaluations it reused ran with the config file's batch of 6, and say so.
    expect([summary.before.batchSize, ...summary.stages.map((s) => s.eval.batchSize)]).toEqual([6, 6, 6]);
    expect(summary.config.eval.batch_size).toBe(2);
  });

  it('a rerun re-fuses a stage model that is no longer complete (a truncated shard) and ends with the same bytes', async () => {
    const model = path.join(out, 'stages/2/model');
    const shard = readdirSync(model).find((f) => f.endsWith('.safetensors'))!;
    // Content only (fingerprint also records mtimes, which a re-fusion changes); the fused
    // model's own record carries timestamps, so it is compared through its shards.
    const shards = () => [...fingerprint(model)].filter(([f]) => f.endsWith('.safetensors')).map(([f, v]) => [f, v.split('@')[0]]);
    const before = shards();
    truncateSync(path.join(model, shard), 100);
    const { summary, lines } = await run(cfg.file);
    // The log says the stage is fused again, not trained (as the dry run's plan says it).
    expect(lines).toContain('APEX stage 2 of 2: trained, fusing its model');
    expect(lines).not.toContain('APEX stage 2 of 2: training');
    expect(summary.invocation.skipped).not.toContain('run/stage/2');
    expect(summary.invocation.skipped).toContain('run/stage/1');
    expect(shards()).toEqual(before);
  });

  it('refuses to resume when the data or the base model changed since the run began (RUN_INPUT_CHANGED)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-inputs-'));
    const model = path.join(dir, 'model');
    cpSync(MODEL, model, { recursive: true });
    const data = MICRO_DATA.map((f, i) => { const to = path.join(dir, `doc${i}.txt`); cpSync(f, to); return to; });
    let text = microConfig().replace(`model: ${MODEL}`, `model: ${model}`).replace(`train: [${MICRO_DATA.join(', ')}]`, `train: [${data.join(', ')}]`);
    text = text.replace('stages: { count: 2, steps: 4 }', 'stages: { count: 1, steps: 4 }');
    const file = path.join(dir, 'run.yaml');
    writeFileSync(file, text);
    const abort = new AbortController();
    const err = await run(file, { signal: abort.signal, onStatus: (m) => { if (/^APEX stage 1: step 2\//.test(m)) abort.abort(new InterruptedError('test interrupt')); } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);

    const original = readFileSync(data[1]!, 'utf8');
    writeFileSync(data[1]!, `${original}\nA paragraph the first invocation never saw.\n`);
    const dataChanged = await run(file).catch((e: unknown) => e);
    expect(dataChanged).toMatchObject({ code: 'RUN_INPUT_CHANGED', exit: 2, message: expect.stringMatching(/the data of .* changed since the run began: train: .*doc1\.txt \(sha256 [0-9a-f]{12}… then, [0-9a-f]{12}… now\).*--force/) });
    writeFileSync(data[1]!, original);

    // The tokenizer decides the data's tokens and is copied into every fused checkpoint.
    const tokenizerPath = path.join(model, 'tokenizer_config.json');
    const tokenizerText = readFileSync(tokenizerPath, 'utf8');
    writeFileSync(tokenizerPath, tokenizerText.replace('"model_max_length": 512', '"model_max_length": 511'));
    const tokenizerChanged = await run(file).catch((e: unknown) => e);
    expect(tokenizerChanged).toMatchObject({ code: 'RUN_INPUT_CHANGED', message: expect.stringMatching(/the base model of .* changed since the run began: tokenizer_config\.json \(sha256/) });
    writeFileSync(tokenizerPath, tokenizerText);

    // A record made before apex hashed the tokenizer and generation files (config.json alone
    // among them), by another apex version: those files are not "new", and the version change is
    // said; a file that such a record did hash is still compared (config.json, below).
    const out = path.join(dir, 'apex-run');
    const statePath = path.join(out, 'run.json');
    const state = JSON.parse(readFileSync(statePath, 'utf8')) as { apexVersion: string; steps: { model: { result: { files: { file: string }[] } } } };
    const hashed = state.steps.model.result.files.map((f) => f.file);
    expect(hashed).toEqual(expect.arrayContaining(['config.json', 'tokenizer_config.json']));
    state.apexVersion = '0.0.1-older';
    state.steps.model.result.files = state.steps.model.result.files.filter((f) => !/^(tokenizer|special_tokens_map|generation_config)/.test(f.file));
    writeFileSync(statePath, JSON.stringify(state));
    const olderLines: string[] = [];
    const again = new AbortController();
    const older = await run(file, { lines: olderLines, signal: again.signal, onStatus: (m) => { if (/^APEX stage 1: step 3\//.test(m)) again.abort(new InterruptedError('test interrupt')); } }).catch((e: unknown) => e);
    expect(older).toBeInstanceOf(InterruptedError);
    expect(olderLines).toContain(`warning: ${out} was begun by apex 0.0.1-older; apex ${apexVersion()} continues it, so its steps so far and from here on come from two versions (summary.json: apexVersion and begunByApexVersion)`);
    // The resumed invocation recorded every file again.
    expect((JSON.parse(readFileSync(statePath, 'utf8')) as typeof state).steps.model.result.files.map((f) => f.file)).toEqual(hashed);

    const configPath = path.join(model, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), _name_or_path: 'edited' }));
    const modelChanged = await run(file).catch((e: unknown) => e);
    expect(modelChanged).toMatchObject({ code: 'RUN_INPUT_CHANGED', message: expect.stringMatching(/the base model of .* changed since the run began: config\.json \(sha256/) });

    // A finished run never loads its data again; its files are still compared (by hash).
    writeFileSync(configPath, readFileSync(path.join(MODEL, 'config.json')));
    expect((await run(file)).summary.invocation.start).toBe('resumed');
    writeFileSync(data[0]!, `${readFileSync(data[0]!, 'utf8')}\nMore text.\n`);
    const afterFinish = await run(file).catch((e: unknown) => e);
    expect(afterFinish).toMatchObject({ code: 'RUN_INPUT_CHANGED', message: expect.stringMatching(/the data of .* changed since the run began: train: .*doc0\.txt \(sha256/) });

    // A base model file rewritten while the run trains: refused before the baseline reads it.
    let edited = false;
    const during = await run(file, {
      force: true,
      onStatus: (m) => {
        if (!edited && /^APEX stage 1: step 3\//.test(m)) {
          edited = true;
          writeFileSync(tokenizerPath, tokenizerText.replace('"model_max_length": 512', '"model_max_length": 510'));
        }
      },
    }).catch((e: unknown) => e);
    expect(edited).toBe(true);
    expect(during).toMatchObject({ code: 'RUN_INPUT_CHANGED', message: expect.stringMatching(/the base model of .* changed while the run was running: tokenizer_config\.json \(sha256/) });
    expect(existsSync(path.join(dir, 'apex-run', 'baseline'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the held-out evaluations during training (eval.every) run in batches of eval.batch_size, not optimizer.batch_size: each stage records it', async () => {
    const { dir, file } = configFolder(microConfig('baseline: { vanilla: false }'));
    await run(file, { overrides: ['stages.count=1', 'stages.steps=2', 'eval.every=1', 'eval.batch_size=2'] });
    const details = (JSON.parse(readFileSync(path.join(dir, 'apex-run', 'stages/1/apex_run.json'), 'utf8')) as { details: { eval: unknown; optimizer: { batchSize: number } } }).details;
    expect(details.eval).toEqual({ every: 1, batch_size: 2 });
    expect(details.optimizer.batchSize).toBe(4);
    const metrics = readFileSync(path.join(dir, 'apex-run', 'stages/1/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; eval_loss?: number });
    expect(metrics.filter((l) => l.eval_loss !== undefined).map((l) => l.step)).toEqual([0, 1, 2]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the evaluations during training take at most optimizer.batch_size sequences at once: a larger eval.batch_size does not raise a micro-batch lowered for memory', async () => {
    const { dir, file } = configFolder(microConfig('baseline: { vanilla: false }'));
    // eval.batch_size is 6 in this config; the evaluations between steps run 1 at a time, as training does.
    await run(file, { overrides: ['stages.count=1', 'stages.steps=1', 'eval.every=1', 'optimizer.batch_size=1'] });
    const details = (JSON.parse(readFileSync(path.join(dir, 'apex-run', 'stages/1/apex_run.json'), 'utf8')) as { details: { eval: unknown } }).details;
    expect(details.eval).toEqual({ every: 1, batch_size: 1 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('eval.every 0 evaluates before the first and after the last step only, as --eval-every 0', async () => {
    const { dir, file } = configFolder(microConfig('baseline: { vanilla: false }'));
    await run(file, { overrides: ['stages.count=1', 'stages.steps=3', 'eval.every=0'] });
    const metrics = readFileSync(path.join(dir, 'apex-run', 'stages/1/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; eval_loss?: number });
    expect(metrics.filter((l) => l.eval_loss !== undefined).map((l) => l.step)).toEqual([0, 3]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('max_memory below what training every weight needs is refused before the run folder exists (vanilla)', async () => {
    const { dir, file } = configFolder(microConfig('method: vanilla\nbaseline: { vanilla: false }'));
    const err = await run(file, { overrides: ['max_memory=105MB'] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ exit: 5, message: expect.stringMatching(/before any selection\) needs about .*gradients and optimizer state 34\.0 MB.*raise max_memory, or lower optimizer\.batch_size/) });
    expect(existsSync(path.join(dir, 'apex-run'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a lora.match_params that is not an APEX run is refused before any work', async () => {
    const { dir, file } = configFolder(microConfig(`method: lora\nlora: { match_params: ${path.join(tmpdir(), 'no-such-apex-run')} }\nbaseline: { vanilla: false }`));
    const err = await run(file).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'MATCH_PARAMS', exit: 3 });
    expect(existsSync(path.join(dir, 'apex-run'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('holds the run folder locked throughout, also while a stage is fused', async () => {
    const { dir, file } = configFolder(microConfig('baseline: { vanilla: false }').replace('stages: { count: 2, steps: 4 }', 'stages: { count: 1, steps: 2 }'));
    const attempts: Promise<unknown>[] = [];
    await run(file, {
      onStatus: (m) => {
        if (/^APEX: fusing layer 1\//.test(m)) attempts.push(acquireOutputLock(path.join(dir, 'apex-run')).then((l) => l.release().then(() => 'taken'), (e: unknown) => e));
      },
    });
    expect(attempts).toHaveLength(1);
    expect(await attempts[0]).toMatchObject({ code: 'OUTPUT_LOCKED' });
    // Without a baseline the report's table has no baseline columns.
    const html = readFileSync(path.join(dir, 'apex-run', 'index.html'), 'utf8');
    expect(html).toMatch(/<th[^>]*>tokens trained<\/th>/);
    expect(html).not.toMatch(/<th[^>]*>vs vanilla<\/th>/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a different config on the run folder (exit 2) and changes nothing', async () => {
    const before = fingerprint(out);
    const err = await run(cfg.file, { overrides: ['stages.steps=5'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).code).toBe('RUN_CONFIG_CHANGED');
    expect((err as Error).message).toContain('stages.steps');
    expect(fingerprint(out)).toEqual(before);
  });

  it('--dry-run plans each line as its stages then trained (trainable parameters, memory estimate, tokens) and writes nothing', async () => {
    const plan = async (overrides: string[] = []) => planRun({ resolved: await resolveConfig({ file: cfg.file, overrides, cwd: cfg.dir }) });
    const before = fingerprint(out);
    const p = await plan();
    expect(fingerprint(out)).toEqual(before);
    expect(p.start).toBe('resumed');
    expect(p.data).toEqual({ train: expect.any(Number), eval: 6, calibration: 8, seqLen: 32 });
    // Every stage is complete: nothing to train; stage 1 is planned as new, for the figures.
    expect(p.lines.map((l) => [l.name, l.stages, l.tokens, l.complete, l.toTrain, l.stage.stage])).toEqual([['APEX', 2, 2 * 4 * 4 * 32, [1, 2], 0, 1], ['vanilla', 2, 2 * 4 * 4 * 32, [1, 2], 0, 1]]);
    const record = (rel: string) => JSON.parse(readFileSync(path.join(out, rel, 'apex_run.json'), 'utf8')) as { details: { trainable: unknown; memory_estimate: unknown } };
    for (const [line, rel] of [[p.lines[0]!, 'stages/1'], [p.lines[1]!, 'baseline/vanilla/stages/1']] as const) {
      expect(line.stage.status).toBe('planned');
      expect(line.stage.trainable, rel).toEqual(record(rel).details.trainable);
      expect(line.stage.plan!.memory, rel).toEqual(record(rel).details.memory_estimate);
    }
    // As the run itself: another config on the folder is refused; another folder would be new (and is not created).
    expect(((await plan(['stages.steps=5']).catch((e: unknown) => e)) as UsageError).code).toBe('RUN_CONFIG_CHANGED');
    const elsewhere = path.join(cfg.dir, 'not-yet');
    expect((await plan([`output=${elsewhere}`])).start).toBe('new');
    expect(existsSync(elsewhere)).toBe(false);
    expect(fingerprint(out)).toEqual(before);
    expect(readdirSync(cfg.dir).filter((f) => f.endsWith('.lock'))).toEqual([]);
  });

  it('an interrupted stage resumes from its checkpoint and ends with the same weights as the uninterrupted run; --force redoes everything', async () => {
    const other = configFolder(microConfig());
    const otherOut = path.join(other.dir, 'apex-run');
    const abort = new AbortController();
    const err = await run(other.file, {
      signal: abort.signal,
      onStatus: (m) => { if (/^APEX stage 2: step 3\//.test(m)) abort.abort(new InterruptedError('test interrupt')); },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(existsSync(path.join(otherOut, 'stages/2/apex_run.json'))).toBe(false);
    expect(existsSync(path.join(otherOut, 'stages/2/checkpoints'))).toBe(true);

    const { summary, lines } = await run(other.file);
    expect(summary.invocation.skipped).toEqual(expect.arrayContaining(['eval/before', 'analysis', 'run/stage/1', 'run/eval/1']));
    expect(summary.invocation.skipped).not.toContain('run/stage/2');
    expect(lines.some((l) => /^APEX: resuming stage 2 from step [23] /.test(l))).toBe(true);
    const steps = readFileSync(path.join(otherOut, 'stages/2/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step as number);
    expect(steps.filter((s) => s > 0)).toEqual([1, 2, 3, 4]);
    for (const rel of ['stages/1/model', 'stages/2/model', 'baseline/vanilla/stages/2/model']) {
      expect(await maxWeightDifference(path.join(out, rel), path.join(otherOut, rel)), rel).toBeLessThanOrEqual(1e-6);
    }
    expect(summary.perplexity.final).toBeCloseTo(first.perplexity.final, 4);

    const stageRecordBefore = readFileSync(path.join(otherOut, 'stages/1/apex_run.json'), 'utf8');
    const forced = await run(other.file, { force: true });
    expect(forced.summary.invocation.start).toBe('restarted');
    expect(forced.summary.invocation.skipped).toEqual([]);
    expect(readFileSync(path.join(otherOut, 'stages/1/apex_run.json'), 'utf8')).not.toBe(stageRecordBefore);
    expect(await maxWeightDifference(path.join(out, 'stages/2/model'), path.join(otherOut, 'stages/2/model'))).toBeLessThanOrEqual(1e-6);
  });
});
