/**
 * Shared harness of the method benchmarks (bench/method/*.ts): one fixed budget, one arm = one
 * `apex run` (the library's runPipeline, no CLI start-up) per seed, the held-out perplexity curve
 * read back from every stage's metrics.jsonl, the comparison metrics fixed in advance
 * (final held-out perplexity; tokens APEX needs to reach vanilla's final perplexity), and the
 * mean ± std / min–max summaries written to bench/method/results/.
 *
 * Within a seed every arm sees the same data split, data order and held-out set (all derive from
 * `seed`), so arms are compared seed by seed. Vanilla runs are shared between experiments: an arm
 * whose run folder already holds a finished run of the same config is read back, not retrained.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { arch, cpus, platform } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runAnalysis } from '../../src/pipeline/analyze.js';
import { loadRunData } from '../../src/pipeline/run-data.js';
import { runPipeline } from '../../src/pipeline/run.js';
import type { RunSummary } from '../../src/pipeline/run-summary.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { resolveConfig } from '../../src/run/config.js';
import { readMetrics } from '../../src/train/metrics-log.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const RESULTS_DIR = join(REPO, 'bench/method/results');
/** Run folders (checkpoints, several MB each) live outside the repository. */
export const RUNS_DIR = process.env.APEX_BENCH_RUNS ?? '/tmp/apex-bench-method';

/**
 * The budget, fixed before any run and identical for every arm (only the method keys differ).
 * lr 1e-3 is the embedded demo's, chosen before these benchmarks; it is not tuned per arm.
 * 2 stages × 18 steps × 8 × 64 tokens = 18,432 training tokens per arm.
 */
export const BUDGET = {
  model: 'fixtures/llama-mha-f32',
  train: 'builtin:out-of-domain',
  seqLen: 64,
  batchSize: 8,
  stages: 2,
  stepsPerStage: 18,
  lr: 1e-3,
  evalEvery: 6,
  evalSamples: 48,
  calibrationSamples: 32,
  backend: 'wasm',
} as const;

export const TOTAL_STEPS = BUDGET.stages * BUDGET.stepsPerStage;

/** The config overrides every arm shares. */
export function budgetOverrides(seed: number): string[] {
  const b = BUDGET;
  return [
    `model=${join(REPO, b.model)}`,
    `data.train=${b.train}`,
    `data.seq_len=${b.seqLen}`,
    `data.eval_samples=${b.evalSamples}`,
    `data.calibration_samples=${b.calibrationSamples}`,
    `optimizer.lr=${b.lr}`,
    `optimizer.batch_size=${b.batchSize}`,
    `stages.count=${b.stages}`,
    `stages.steps=${b.stepsPerStage}`,
    `eval.every=${b.evalEvery}`,
    'checkpoint.every=null',
    'baseline.vanilla=false',
    `backend=${b.backend}`,
    `seed=${seed}`,
  ];
}

export interface Arm {
  readonly name: string;
  /** Overrides on top of the budget (method, setting, ablation keys). */
  readonly overrides: readonly string[];
}

export const VANILLA: Arm = { name: 'vanilla', overrides: ['method=vanilla'] };
export const APEX_FULL: Arm = { name: 'apex-full', overrides: ['method=apex', 'setting=full'] };

/** One point of the held-out perplexity curve: cumulative training tokens of the arm. */
export interface CurvePoint { readonly tokens: number; readonly ppl: number }

export interface ArmResult {
  readonly arm: string;
  readonly seed: number;
  readonly run: string;
  readonly before: number;
  /** Held-out perplexity of the fused model after each stage. */
  readonly stagePpl: number[];
  readonly final: number;
  readonly totalTokens: number;
  /** In-training evaluations, stage boundaries joined (cumulative tokens). */
  readonly curve: CurvePoint[];
  readonly trainableParams: number[];
  readonly trainableFraction: number[];
  readonly trainSeconds: number;
  /** The last stage's fused model (absolute path). */
  readonly finalModel: string;
}

export function runFolder(arm: string, seed: number): string {
  return join(RUNS_DIR, arm, `seed-${seed}`);
}

/** Trains one arm for one seed (or reads back a finished run of the same config). */
export async function runArm(arm: Arm, seed: number, log: (m: string) => void = () => {}): Promise<ArmResult> {
  const output = runFolder(arm.name, seed);
  const resolved = await resolveConfig({ cwd: REPO, overrides: [...budgetOverrides(seed), ...arm.overrides, `output=${output}`] });
  const t0 = performance.now();
  const summary = await runPipeline({ resolved, log: (m) => log(`  [${arm.name} s${seed}] ${m}`) });
  const result = await collectArm(arm.name, seed, summary);
  log(`  [${arm.name} s${seed}] final ppl ${result.final.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  return result;
}

async function collectArm(arm: string, seed: number, summary: RunSummary): Promise<ArmResult> {
  const curve: CurvePoint[] = [{ tokens: 0, ppl: summary.perplexity.before }];
  let offset = 0;
  for (const stage of summary.stages) {
    const lines = await readMetrics(join(summary.run, stage.path, 'metrics.jsonl'));
    for (const l of lines) {
      if (l.eval_ppl === undefined || l.step === 0) continue;
      curve.push({ tokens: offset + l.tokens, ppl: l.eval_ppl });
    }
    offset += stage.tokens;
    // The fused model's evaluation is the authoritative point at the stage end.
    const last = curve[curve.length - 1]!;
    if (last.tokens === offset) curve[curve.length - 1] = { tokens: offset, ppl: stage.eval.perplexity };
    else curve.push({ tokens: offset, ppl: stage.eval.perplexity });
  }
  return {
    arm,
    seed,
    run: summary.run,
    before: summary.perplexity.before,
    stagePpl: [...summary.perplexity.stages],
    final: summary.perplexity.final,
    totalTokens: offset,
    curve,
    trainableParams: summary.stages.map((s) => s.trainableParams),
    trainableFraction: summary.stages.map((s) => s.trainableFraction),
    trainSeconds: summary.stages.reduce((a, s) => a + s.trainSeconds, 0),
    finalModel: join(summary.run, summary.stages[summary.stages.length - 1]!.model),
  };
}

/**
 * Tokens the curve needs to first reach `target` perplexity, linearly interpolated between
 * evaluation points; null when it never does within its budget.
 */
export function tokensToReach(curve: readonly CurvePoint[], target: number): number | null {
  if (curve[0] && curve[0].ppl <= target) return curve[0].tokens;
  for (let i = 1; i < curve.length; i++) {
    const a = curve[i - 1]!;
    const b = curve[i]!;
    if (b.ppl <= target) return a.tokens + ((a.ppl - target) / (a.ppl - b.ppl)) * (b.tokens - a.tokens);
  }
  return null;
}

export interface Stats { readonly n: number; readonly mean: number; readonly std: number; readonly min: number; readonly max: number }

/** Mean, sample standard deviation (n − 1), min and max. */
export function stats(xs: readonly number[]): Stats {
  const n = xs.length;
  const mean = xs.reduce((a, x) => a + x, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return { n, mean, std, min: Math.min(...xs), max: Math.max(...xs) };
}

export function fmt(s: Stats, digits = 3): string {
  return `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)}, n=${s.n})`;
}

/** `--seeds N` (default 5) and `--first-seed S` (default 0) from argv. */
export function parseArgs(argv: readonly string[]): { seeds: number[] } {
  const get = (flag: string, fallback: number) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : fallback;
  };
  const count = get('--seeds', 5);
  const first = get('--first-seed', 0);
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(first) || first < 0) throw new Error('usage: --seeds N (>= 1) --first-seed S (>= 0)');
  return { seeds: Array.from({ length: count }, (_, i) => first + i) };
}

export function environment(): Record<string, unknown> {
  return {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${platform()} ${arch()}`,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    backend: BUDGET.backend,
  };
}

export async function writeResult(name: string, value: unknown): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${name}.json`);
  await writeFile(path, `${JSON.stringify(value, null, 1)}\n`);
  return path;
}

export async function readResult<T>(name: string): Promise<T> {
  return JSON.parse(await readFile(join(RESULTS_DIR, `${name}.json`), 'utf8')) as T;
}

/** Per-layer activation CV (heads, channels) and effective ranks of a model, from `runAnalysis`. */
export interface ModelDiagnostics {
  readonly headCv: number[];
  readonly channelCv: number[];
  readonly erank: Record<string, number>[];
  readonly deltaErank: Record<string, number>[] | null;
}

/**
 * Runs the analysis of `model` on the seed's calibration sequences (the same sequences for every
 * model of a seed), with the effective rank of W and, given `base`, of ΔW = W − W_base.
 */
export async function diagnose(model: string, seed: number, output: string, base?: string): Promise<ModelDiagnostics> {
  const resolved = await resolveConfig({ cwd: REPO, overrides: [...budgetOverrides(seed), 'method=apex', `output=${output}`] });
  const tokenizer = await loadTokenizer(join(REPO, BUDGET.model));
  const data = await loadRunData(resolved.config, tokenizer);
  const result = await runAnalysis({
    model: resolve(model),
    output,
    data: data.calibration!,
    batchSize: BUDGET.batchSize,
    ratio: 0.375,
    seed,
    backend: BUDGET.backend,
    erank: true,
    ...(base !== undefined ? { base: resolve(base) } : {}),
  });
  const a = result.analysis;
  return {
    headCv: a.layers.map((l) => l.heads.normCv),
    channelCv: a.layers.map((l) => l.channels.normCv),
    erank: a.erank!.layers.map((l) => ({ ...l.erank })),
    deltaErank: base !== undefined ? a.erank!.layers.map((l) => ({ ...l.delta! })) : null,
  };
}

/** Every arm of a comparison against vanilla, for one seed. */
export interface ComparisonRow {
  readonly seed: number;
  readonly vanilla: ArmResult;
  readonly arms: Record<string, ArmResult & { readonly tokensToVanillaFinal: number | null; readonly fraction: number | null }>;
}

/**
 * Trains vanilla (shared, read back when already run) and every arm for every seed (in the
 * order given: an arm may depend on an earlier one's run folder), writing
 * results/<name>.json after each seed so a stopped run keeps what it finished.
 */
export async function compareWithVanilla(
  name: string,
  armsOf: readonly Arm[] | ((seed: number) => readonly Arm[]),
  seeds: readonly number[],
  notes: Record<string, unknown> = {},
): Promise<ComparisonRow[]> {
  const log = (m: string) => console.error(m);
  const rows: ComparisonRow[] = [];
  let arms: readonly Arm[] = [];
  for (const seed of seeds) {
    log(`seed ${seed}`);
    arms = typeof armsOf === 'function' ? armsOf(seed) : armsOf;
    const vanilla = await runArm(VANILLA, seed, log);
    const out: ComparisonRow['arms'] = {};
    for (const arm of arms) {
      const r = await runArm(arm, seed, log);
      const reach = tokensToReach(r.curve, vanilla.final);
      out[arm.name] = { ...r, tokensToVanillaFinal: reach, fraction: reach === null ? null : reach / vanilla.totalTokens };
    }
    rows.push({ seed, vanilla, arms: out });
    await writeResult(name, { experiment: name, budget: BUDGET, arms, notes, environment: environment(), rows });
  }
  console.log(comparisonTable(rows, arms.map((a) => a.name)));
  return rows;
}

/** Plain-text summary of a comparison (the tables of docs/results.md are built from the same numbers). */
export function comparisonTable(rows: readonly ComparisonRow[], armNames: readonly string[]): string {
  const lines = [`vanilla: final ppl ${fmt(stats(rows.map((r) => r.vanilla.final)))}`];
  for (const name of armNames) {
    const rs = rows.map((r) => r.arms[name]!);
    const fr = rs.map((r) => r.fraction).filter((f): f is number => f !== null);
    lines.push(
      `${name}: final ppl ${fmt(stats(rs.map((r) => r.final)))}; minus vanilla ${fmt(stats(rows.map((r) => r.arms[name]!.final - r.vanilla.final)))}; ` +
        `wins ${rows.filter((r) => r.arms[name]!.final < r.vanilla.final).length}/${rows.length}; trainable ${(100 * rs[0]!.trainableFraction[0]!).toFixed(2)}%; ` +
        `reached vanilla final in ${fr.length}/${rs.length}${fr.length > 0 ? `, fraction of tokens ${fmt(stats(fr), 2)}` : ''}`,
    );
  }
  return lines.join('\n');
}
