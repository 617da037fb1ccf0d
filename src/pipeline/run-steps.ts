/**
 * The two steps of an `apex run` that come before training: held-out perplexity of the base
 * model, and the advantage assessment (method apex) that selects stage 1's units. Each is
 * skipped when the run folder already holds it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ANALYSIS_FILES, type AnalysisJson } from './analysis-json.js';
import type { AnalysisMemoryNames } from './analysis-memory.js';
import { runAnalysis } from './analyze.js';
import { readJson } from './expand-paths.js';
import { evalSettings, type RunContext } from './run-context.js';
import { evaluateCheckpoint, type HeldOutEval } from './run-eval.js';

export const ANALYSIS_FOLDER = 'analysis';

/** How the run's analysis names its settings in a refusal: the config keys. */
export const RUN_ANALYSIS_MEMORY_NAMES: AnalysisMemoryNames = { maxMemory: 'max_memory', samples: 'data.calibration_samples', batchSize: 'optimizer.batch_size' };

export interface StepOutcome<T> {
  readonly value: T;
  readonly seconds: number;
  readonly skipped: boolean;
}

/** Held-out perplexity of the base model (run.json key `eval/before`). */
export async function measureBaseModel(ctx: RunContext): Promise<StepOutcome<HeldOutEval>> {
  const known = ctx.state.completed<HeldOutEval>('eval/before');
  if (known !== undefined) return { value: known.result, seconds: known.wallSeconds, skipped: true };
  const data = await ctx.data();
  ctx.log('held-out perplexity of the base model');
  const t0 = performance.now();
  const value = await evaluateCheckpoint(ctx.modelDir, data.eval, { ...evalSettings(ctx), onProgress: (t) => ctx.status(`base model evaluation: ${t}`) });
  const seconds = (performance.now() - t0) / 1000;
  await ctx.state.complete('eval/before', seconds, value);
  return { value, seconds, skipped: false };
}

/**
 * The advantage assessment on the calibration data into `<run>/analysis/`. The folder is
 * written atomically, so an analysis.json there means a complete analysis.
 */
export async function assessAdvantage(ctx: RunContext): Promise<StepOutcome<null>> {
  const { config } = ctx;
  const dir = join(ctx.run, ANALYSIS_FOLDER);
  const analysisJson = join(dir, ANALYSIS_FILES.json);
  if (existsSync(analysisJson)) {
    const seconds = ctx.state.completed('analysis')?.wallSeconds ?? ((await readJson(analysisJson)) as AnalysisJson).timing.totalSeconds;
    return { value: null, seconds, skipped: true };
  }
  const data = await ctx.data();
  ctx.log('advantage assessment on the calibration data');
  const t0 = performance.now();
  await runAnalysis({
    model: ctx.modelDir,
    output: dir,
    data: data.calibration!, // loaded whenever the method is apex
    batchSize: config.optimizer.batch_size,
    ratio: config.stages.ratio,
    seed: config.seed,
    backend: config.backend,
    score: config.stages.score,
    decayK: config.stages.decay_k,
    stage: 1,
    randomSelection: config.stages.random_selection,
    reverse: config.stages.reverse,
    ...(config.max_memory !== null ? { maxMemory: config.max_memory } : {}),
    memoryNames: RUN_ANALYSIS_MEMORY_NAMES,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    progress: ctx.status,
    onWarning: ctx.onWarning,
  });
  const seconds = (performance.now() - t0) / 1000;
  await ctx.state.complete('analysis', seconds, null);
  return { value: null, seconds, skipped: false };
}
