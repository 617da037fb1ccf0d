/**
 * How close apex's memory estimates (what `--max-memory` is compared with) are to what the
 * commands really use (issue 8: within 30%). For analyze, eval, finetune and expand (and run
 * with --with-run) on fixtures/stories260K, fixtures/llama-mha-f32, a generated 10M-parameter
 * f32 LLaMA and a generated ~96M-parameter bf16 one (both cached under /tmp), on seeded random
 * token ids (--input-ids, the same way for every model), it runs the built CLI under
 * `/usr/bin/time` and compares
 *
 *     estimate  /  (peak RSS of the command − baseline RSS)
 *
 * baseline = peak RSS of a Node process that imports every apex command module (what oclif
 * loads at start-up, TensorFlow.js included), initialises the wasm backend and runs one small
 * op: the memory any apex command holds before it reads a model. Median of 3.
 *
 * Estimates, per command: analyze and finetune print theirs (--json `memoryEstimateBytes`),
 * expand prints `memory.totalBytes`; eval's is the forward plan it makes (planForward with the
 * same sequences, length, batch size and default budget), computed here with apex's function;
 * run's is the largest of its steps' estimates (analysis.json, each stage's apex_run.json,
 * each fused model's apex_run.json, and the evaluations' forward plans).
 *
 *     npx tsx scripts/memory-estimates.ts [--sizes stories,small,10m,medium] [--with-run] [--json out.json]
 *
 * `--training` measures finetune alone over every method and setting (vanilla, LoRA r8, APEX
 * operators / structured / full) at two micro-batch sizes per model (docs/reliability.md's
 * training table), each from a copy of one analysis made beforehand, so that the analysis's own
 * peak is not counted. `--seq-len N` and `--batches a,b` replace the sizes' sequence length and
 * micro-batches (long sequences, where the attention-score terms dominate); `--recompute` adds
 * --recompute-activations to every finetune; `--runs a,b` measures only those labels (vanilla,
 * "lora r8", operators, structured, full, and structured-min: N ∪ P only, no embeddings, which is
 * not in the default matrix).
 */
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from '../bench/random-checkpoint.js';
import { parseModelConfig } from '../src/model/config.js';
import { planForward } from '../src/model/memory-estimate.js';
import type { ModelSpec } from '../src/model/model-spec.js';
import { ROOT } from './lib/crash-process.js';
import { writeRandomIds } from './lib/random-ids.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: 'stories,small,10m,medium' }, 'with-run': { type: 'boolean', default: false }, training: { type: 'boolean', default: false }, 'seq-len': { type: 'string' }, batches: { type: 'string' }, recompute: { type: 'boolean', default: false }, runs: { type: 'string' }, json: { type: 'string' } } });
const GiB = 2 ** 30;
const MB = 1e6;
const FOUR_GIB = 4 * GiB;
const BIN = join(ROOT, 'bin', 'run.js');
const FIXTURE = join(ROOT, 'fixtures', 'llama-mha-f32');
const STORIES = join(ROOT, 'fixtures', 'stories260K');
const TEN_M = join(tmpdir(), 'apex-memory-10m-f32');
const MEDIUM = join(tmpdir(), 'apex-memory-medium-bf16');

interface Size {
  readonly name: string;
  readonly model: string;
  /** Calibration / evaluation: sequences, tokens each, batch. */
  readonly samples: number;
  readonly seqLen: number;
  readonly batch: number;
  /** Training: batch of seqLen-token sequences, steps, APEX setting. */
  readonly trainBatch: number;
  readonly steps: number;
  readonly setting: 'structured' | 'operators';
  /** Micro-batches of the --training matrix. */
  readonly trainingBatches: readonly number[];
}

const SIZES: Record<string, Size> = {
  stories: { name: 'stories', model: STORIES, samples: 32, seqLen: 128, batch: 8, trainBatch: 8, steps: 2, setting: 'structured', trainingBatches: [8, 16] },
  small: { name: 'small', model: FIXTURE, samples: 32, seqLen: 128, batch: 8, trainBatch: 8, steps: 2, setting: 'structured', trainingBatches: [4, 8] },
  '10m': { name: '10m', model: TEN_M, samples: 16, seqLen: 128, batch: 8, trainBatch: 4, steps: 2, setting: 'structured', trainingBatches: [4, 8] },
  // structured training of ~96M parameters does not fit wasm's 4 GiB heap (refused, exit 5).
  medium: { name: 'medium', model: MEDIUM, samples: 8, seqLen: 128, batch: 4, trainBatch: 1, steps: 2, setting: 'operators', trainingBatches: [1] },
};

/** 10.4M parameters in f32: 8 layers, hidden 256, 8 heads / 4 KV heads, FFN 688, vocabulary 8192 (docs/benchmarks.md). */
async function ensureTenMModel(): Promise<void> {
  if (existsSync(join(TEN_M, 'model.safetensors'))) return;
  await writeRandomCheckpoint(TEN_M, { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 8192 }, 'F32');
}

/** ~96M parameters: hidden 768, 10 layers, 12 heads, FFN 2048, vocabulary 16,000, bf16 (192 MB). */
async function ensureMediumModel(): Promise<void> {
  if (existsSync(join(MEDIUM, 'model.safetensors')) || existsSync(join(MEDIUM, 'model.safetensors.index.json'))) return;
  await writeRandomCheckpoint(MEDIUM, { layers: 10, hidden: 768, heads: 12, kvHeads: 12, intermediate: 2048, vocab: 16000 }, 'BF16');
  // The fixture's tokenizer (2,048 ids, all below 16,000) so the built-in corpus can be used.
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(FIXTURE, f), join(MEDIUM, f));
}

interface Measured {
  readonly status: number;
  readonly peakBytes: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

function timed(args: string[], cwd: string, nodeArgs: string[] = [BIN]): Promise<Measured> {
  return new Promise((done) => {
    const started = performance.now();
    execFile('/usr/bin/time', ['-f', 'MAXRSS_KB=%M', process.execPath, ...nodeArgs, ...args], { cwd, maxBuffer: 256 * 2 ** 20, env: { ...process.env, CI: '1', HF_HUB_OFFLINE: '1', HF_HOME: join(cwd, 'hf-home') } }, (err, stdout, stderr) => {
      const kb = /MAXRSS_KB=(\d+)/.exec(stderr);
      done({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, peakBytes: kb ? Number(kb[1]) * 1024 : NaN, stdout, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

/** Peak RSS of a process that loads what every apex command loads and initialises wasm. */
async function baseline(cwd: string): Promise<number> {
  const commands = readdirSync(join(ROOT, 'dist', 'commands')).filter((f) => f.endsWith('.js')).map((f) => join(ROOT, 'dist', 'commands', f));
  const code = [
    "await import('@oclif/core');",
    ...commands.map((c) => `await import(${JSON.stringify(c)});`),
    `const { selectBackend } = await import(${JSON.stringify(join(ROOT, 'dist', 'model', 'backend.js'))});`,
    "await selectBackend('wasm');",
    "const tf = await import('@tensorflow/tfjs');",
    'tf.tidy(() => tf.matMul(tf.ones([64, 64]), tf.ones([64, 64])).dataSync());',
  ].join('\n');
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await timed([], ROOT, ['--input-type=module', '-e', code]);
    if (r.status !== 0) throw new Error(`baseline failed: ${r.stderr}`);
    runs.push(r.peakBytes);
  }
  void cwd;
  return runs.sort((a, b) => a - b)[1]!;
}

function json(r: Measured, what: string): Record<string, unknown> {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}): ${r.stderr.slice(-1500)}`);
  return (JSON.parse(r.stdout) as { data: Record<string, unknown> }).data;
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

function specOf(model: string): ModelSpec {
  return parseModelConfig(readJson(join(model, 'config.json')), model);
}

/** eval's own plan: all sequences, the given length, chunks of at most `batch`, default budget. */
function evalEstimate(spec: ModelSpec, sequences: number, seqLen: number, batch: number): number {
  return planForward(spec, sequences, seqLen, FOUR_GIB, Math.min(batch, sequences)).estimate.totalBytes;
}

interface Row {
  size: string;
  command: string;
  estimateBytes: number;
  peakBytes: number;
  usedBytes: number;
  ratio: number;
  within30: boolean;
  seconds: number;
  note: string;
}

async function measureSize(size: Size, work: string, base: number): Promise<Row[]> {
  const spec = specOf(size.model);
  const rows: Row[] = [];
  const add = (command: string, estimateBytes: number, m: Measured, note = '', baseline = base) => {
    const usedBytes = m.peakBytes - baseline;
    const ratio = estimateBytes / usedBytes;
    rows.push({ size: size.name, command, estimateBytes, peakBytes: m.peakBytes, usedBytes, ratio, within30: Math.abs(ratio - 1) <= 0.3, seconds: m.seconds, note });
    process.stderr.write(`${size.name} ${command}: estimate ${(estimateBytes / MB).toFixed(1)} MB, peak ${(m.peakBytes / MB).toFixed(1)} MB − baseline ${(baseline / MB).toFixed(1)} MB = ${(usedBytes / MB).toFixed(1)} MB → ratio ${ratio.toFixed(2)} (${m.seconds.toFixed(0)} s)\n`);
  };
  const dir = join(work, size.name);
  mkdirSync(dir, { recursive: true });
  const evalIds = join(dir, 'eval-ids.safetensors');
  const trainIds = join(dir, 'train-ids.safetensors');
  await writeRandomIds(evalIds, spec.vocabSize, size.samples, size.seqLen, 1);
  await writeRandomIds(trainIds, spec.vocabSize, 8 * size.trainBatch, size.seqLen, 2);
  const backend = ['--seq-len', String(size.seqLen), '--backend', 'wasm'];
  const run = join(dir, 'ft');

  const analyze = await timed(['analyze', size.model, '-o', join(run, 'analysis'), '--input-ids', evalIds, ...backend, '--batch-size', String(size.batch), '--json'], dir);
  add('analyze', json(analyze, 'analyze').memoryEstimateBytes as number, analyze, `${size.samples} × ${size.seqLen}, batch ${size.batch}`);

  const evaluation = await timed(['eval', size.model, '--input-ids', evalIds, ...backend, '--batch-size', String(size.batch), '--json'], dir);
  const ev = json(evaluation, 'eval');
  add('eval', evalEstimate(spec, ev.sequences as number, ev.seqLen as number, size.batch), evaluation, `${size.samples} × ${size.seqLen}, ${ev.chunkSequences} sequences per chunk`);

  const finetune = await timed(['finetune', size.model, '-o', run, '--input-ids', trainIds, ...backend, '--eval-samples', '2', '--batch-size', String(size.trainBatch), '--steps', String(size.steps), '--setting', size.setting, '--no-expand', '--json'], dir);
  add('finetune', json(finetune, 'finetune').memoryEstimateBytes as number, finetune, `${size.setting}, batch ${size.trainBatch} × ${size.seqLen}`);

  // expand initialises no tfjs backend: its start-up is the same command with --dry-run (which
  // plans but touches no tensor). Tiny commands' peak RSS varies by ±8 MB, so 9 runs of each.
  const medianPeak = async (args: string[]): Promise<Measured> => {
    const runs: Measured[] = [];
    for (let i = 0; i < 9; i++) {
      rmSync(join(run, 'stages', '1', 'model'), { recursive: true, force: true });
      runs.push(await timed(args, dir));
    }
    return runs.sort((x, y) => x.peakBytes - y.peakBytes)[4]!;
  };
  const expandArgs = ['expand', '--run', run, '--stage', '1', '--json'];
  const dry = await medianPeak([...expandArgs, '--dry-run']);
  const expand = await medianPeak(expandArgs);
  add('expand', (json(expand, 'expand').memory as { totalBytes: number }).totalBytes, expand, `${size.setting === 'structured' ? 'operators + trained tensors' : 'operators'}; baseline: expand --dry-run`, dry.peakBytes);

  if (!values['with-run']) return rows;
  const config = join(dir, 'run.yaml');
  writeFileSync(config, [
    `model: ${size.model}`, 'backend: wasm', 'data:', `  train: [${trainIds}]`, `  seq_len: ${size.seqLen}`, `  eval_samples: ${size.samples}`, `  calibration_samples: ${size.samples}`,
    `setting: ${size.setting}`, `stages: { count: 1, steps: ${size.steps} }`, `optimizer: { batch_size: ${size.trainBatch} }`, `eval: { every: null, batch_size: ${size.batch} }`, 'baseline: { vanilla: false }', '',
  ].join('\n'));
  const runOut = join(dir, 'run');
  const pipeline = await timed(['run', config, '-o', runOut, '--json'], dir);
  json(pipeline, 'run');
  const steps = [
    (readJson(join(runOut, 'analysis', 'analysis.json')).memory as { estimateBytes: number }).estimateBytes,
    ((readJson(join(runOut, 'stages', '1', 'apex_run.json')).details as { memory_estimate: { totalBytes: number } }).memory_estimate.totalBytes),
    ((readJson(join(runOut, 'stages', '1', 'model', 'apex_run.json')).details as { memory_estimate_bytes: number }).memory_estimate_bytes),
    evalEstimate(spec, size.samples, size.seqLen, size.batch),
  ];
  add('run', Math.max(...steps), pipeline, `largest step estimate of [analysis, training, expand, eval] = [${steps.map((s) => (s / MB).toFixed(0)).join(', ')}] MB`);
  return rows;
}

const TRAINING_RUNS: { label: string; args: string[]; apex: boolean }[] = [
  { label: 'vanilla', args: ['--method', 'vanilla'], apex: false },
  { label: 'lora r8', args: ['--method', 'lora', '--lora-rank', '8'], apex: false },
  { label: 'operators', args: ['--setting', 'operators'], apex: true },
  { label: 'structured', args: ['--setting', 'structured'], apex: true },
  { label: 'full', args: ['--setting', 'full'], apex: true },
  // The smallest directly-tuned set the default ratio allows (N ∪ P, 37.5% of each layer's units)
  // without embeddings: where the optimizer state of the trained lines matters most.
  { label: 'structured-min', args: ['--setting', 'structured', '--tuned-attn-ratio', '0.375', '--tuned-ffn-ratio', '0.375', '--no-train-embeddings'], apex: true },
];

/** finetune over every method/setting and micro-batch of `size` (--training). */
async function trainingMatrix(size: Size, work: string, base: number): Promise<Row[]> {
  const spec = specOf(size.model);
  const dir = join(work, `${size.name}-training`);
  mkdirSync(dir, { recursive: true });
  const evalIds = join(dir, 'eval-ids.safetensors');
  const trainIds = join(dir, 'train-ids.safetensors');
  const largest = Math.max(...size.trainingBatches);
  await writeRandomIds(evalIds, spec.vocabSize, size.samples, size.seqLen, 1);
  await writeRandomIds(trainIds, spec.vocabSize, 8 * largest, size.seqLen, 2);
  const backend = ['--seq-len', String(size.seqLen), '--backend', 'wasm'];
  const analysis = join(dir, 'analysis');
  json(await timed(['analyze', size.model, '-o', analysis, '--input-ids', evalIds, ...backend, '--batch-size', String(size.batch), '--json'], dir), 'analyze');
  const rows: Row[] = [];
  // --runs vanilla,structured,…: only those (by label; default all but structured-min).
  const wanted = values.runs?.split(',') ?? TRAINING_RUNS.filter((r) => r.label !== 'structured-min').map((r) => r.label);
  for (const run of TRAINING_RUNS.filter((r) => wanted.includes(r.label))) {
    for (const batch of size.trainingBatches) {
      const out = join(dir, `${run.label.replace(' ', '-')}-${batch}`);
      mkdirSync(out, { recursive: true });
      if (run.apex) cpSync(analysis, join(out, 'analysis'), { recursive: true });
      const m = await timed(['finetune', size.model, '-o', out, '--input-ids', trainIds, ...backend, '--eval-samples', '2', '--batch-size', String(batch), '--steps', String(size.steps), ...run.args, ...(values.recompute ? ['--recompute-activations'] : []), '--no-expand', '--json'], dir);
      const estimateBytes = json(m, 'finetune').memoryEstimateBytes as number;
      const usedBytes = m.peakBytes - base;
      const ratio = estimateBytes / usedBytes;
      rows.push({ size: size.name, command: `finetune ${run.label}`, estimateBytes, peakBytes: m.peakBytes, usedBytes, ratio, within30: Math.abs(ratio - 1) <= 0.3, seconds: m.seconds, note: `${batch} × ${size.seqLen}` });
      process.stderr.write(`${size.name} finetune ${run.label} ${batch} × ${size.seqLen}: estimate ${(estimateBytes / MB).toFixed(0)} MB, used ${(usedBytes / MB).toFixed(0)} MB → ${ratio.toFixed(2)} (${m.seconds.toFixed(0)} s)\n`);
      rmSync(out, { recursive: true, force: true });
    }
  }
  return rows;
}

const work = mkdtempSync(join(tmpdir(), 'apex-memory-'));
try {
  const sizes = values.sizes!.split(',').map((s) => SIZES[s] ?? (() => { throw new Error(`unknown size ${s}`); })()).map((s) => ({
    ...s,
    ...(values['seq-len'] ? { seqLen: Number(values['seq-len']) } : {}),
    ...(values.batches ? { trainingBatches: values.batches.split(',').map(Number) } : {}),
  }));
  if (sizes.some((s) => s.name === 'medium')) await ensureMediumModel();
  if (sizes.some((s) => s.name === '10m')) await ensureTenMModel();
  const base = await baseline(work);
  process.stderr.write(`baseline RSS (imports + wasm backend): ${(base / MB).toFixed(1)} MB\n`);
  const rows: Row[] = [];
  for (const size of sizes) rows.push(...(await (values.training ? trainingMatrix(size, work, base) : measureSize(size, work, base))));
  process.stdout.write('| model | command | estimate | peak RSS | − baseline | estimate / used | within 30% | time | note |\n|---|---|---|---|---|---|---|---|---|\n');
  for (const r of rows) {
    process.stdout.write(`| ${r.size} | ${r.command} | ${(r.estimateBytes / MB).toFixed(1)} MB | ${(r.peakBytes / MB).toFixed(1)} MB | ${(r.usedBytes / MB).toFixed(1)} MB | ${r.ratio.toFixed(2)} | ${r.within30 ? 'yes' : '**no**'} | ${r.seconds.toFixed(0)} s | ${r.note} |\n`);
  }
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ baselineBytes: base, rows }, null, 2)}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
