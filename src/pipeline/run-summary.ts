/**
 * `<run>/summary.json` (schema `apex.run/1`): everything a reader or a CI job needs from one
 * `apex run` — the config and its hash, what ran (apex version, backend, seed, base model with
 * file hashes, data specs), held-out perplexity before training, after every stage and for the
 * baseline, and per stage the tokens, steps, trainable parameters and wall time. `--json`
 * prints this same object.
 */
import { join } from 'node:path';
import type { FileRecord } from './provenance.js';
import type { ResolvedConfig } from '../run/config-schema.js';
import type { DataSpecRecord } from '../train/data.js';
import { configHash } from '../run/config-format.js';
import type { HeldOutEval } from './run-eval.js';
import { writeJsonAtomic, type RunStart } from './run-state.js';

export const RUN_SUMMARY_SCHEMA = 'apex.run/1';
export const RUN_SUMMARY_FILE = 'summary.json';
export const RUN_REPORT_FILE = 'index.html';

/** The base model as resolved, with the sha256 of its config and weight files. */
export interface BaseModelRecord {
  /** As written in the config: a folder or a Hub id. */
  readonly argument: string;
  /** The local folder it resolved to. */
  readonly path: string;
  readonly source: 'local' | 'cache' | 'hub';
  readonly repo?: string;
  readonly revision?: string;
  readonly commit?: string;
  readonly parameters: number;
  /** When the files were hashed (ISO 8601); a resumed run re-hashes files modified since. */
  readonly hashedAt?: string;
  readonly files: readonly FileRecord[];
}

/** One trained stage of the run or of the baseline. */
export interface StageSummary {
  readonly stage: number;
  /** Folders relative to the run folder. */
  readonly path: string;
  readonly model: string;
  readonly eval: HeldOutEval;
  /** Optimizer steps and training tokens (sequence positions) of this stage. */
  readonly steps: number;
  readonly tokens: number;
  readonly trainableParams: number;
  readonly trainableFraction: number;
  /** Mean training loss of the stage's last step. */
  readonly finalTrainLoss: number | null;
  /** The stage's training (its metrics' elapsed time, resumed parts included; not the fusion); then the held-out evaluation. */
  readonly trainSeconds: number;
  readonly evalSeconds: number;
}

export interface BaselineSummary {
  readonly method: 'vanilla';
  readonly path: string;
  readonly stages: readonly StageSummary[];
}

export interface RunSummary {
  readonly schema: typeof RUN_SUMMARY_SCHEMA;
  readonly apexVersion: string;
  /** The apex version that began the run: another than apexVersion when a later version resumed it. */
  readonly begunByApexVersion: string;
  readonly configHash: string;
  readonly config: ResolvedConfig;
  /** The run folder (absolute). */
  readonly run: string;
  readonly backend: { readonly name: string; readonly detail: string };
  /** The one seed every random choice derives from (data split and order, operator init, selection). */
  readonly seed: number;
  readonly baseModel: BaseModelRecord;
  readonly data: {
    readonly train: DataSpecRecord;
    readonly eval: DataSpecRecord;
    /** Null for runs without an analysis (baselines). */
    readonly calibration: DataSpecRecord | null;
  };
  /** Held-out perplexity at a glance (the same numbers as in `before`, `stages` and `baseline`). */
  readonly perplexity: {
    readonly before: number;
    readonly stages: readonly number[];
    readonly final: number;
    readonly baseline: number | null;
    readonly baselineStages: readonly number[];
  };
  readonly before: HeldOutEval;
  readonly analysis: { readonly path: string; readonly report: string; readonly seconds: number } | null;
  readonly method: ResolvedConfig['method'];
  readonly setting: ResolvedConfig['setting'];
  readonly stages: readonly StageSummary[];
  readonly baseline: BaselineSummary | null;
  readonly timings: {
    /**
     * Seconds of the run's recorded steps (`steps`: analysis, each stage's training and
     * evaluation, baseline), summed over the invocations that did them; loading, hashing, fusion
     * and the report are outside it, so one invocation that did everything takes longer.
     */
    readonly totalSeconds: number;
    /** Seconds this invocation took. */
    readonly thisInvocationSeconds: number;
    readonly steps: Readonly<Record<string, number>>;
  };
  readonly invocation: {
    readonly start: RunStart;
    /** Work found complete and not redone. */
    readonly skipped: readonly string[];
    readonly startedAt: string;
    readonly finishedAt: string;
  };
}

export async function writeRunSummary(dir: string, summary: RunSummary): Promise<string> {
  const path = join(dir, RUN_SUMMARY_FILE);
  await writeJsonAtomic(path, summary);
  return path;
}

/** What a run produced, before it is put together as a summary. */
export interface RunSummaryParts {
  readonly config: ResolvedConfig;
  readonly apexVersion: string;
  readonly begunByApexVersion: string;
  readonly run: string;
  readonly backend: RunSummary['backend'];
  readonly baseModel: BaseModelRecord;
  readonly data: { readonly train: DataSpecRecord; readonly eval: DataSpecRecord; readonly calibration: DataSpecRecord | null };
  readonly before: { readonly value: HeldOutEval; readonly seconds: number };
  /** Null without an analysis (baselines as the run's method). */
  readonly analysis: { readonly path: string; readonly report: string; readonly seconds: number } | null;
  readonly stages: readonly StageSummary[];
  readonly baseline: BaselineSummary | null;
  readonly start: RunStart;
  readonly skipped: readonly string[];
  readonly startedAt: string;
  readonly invocationSeconds: number;
}

function stageTimes(prefix: string, stages: readonly StageSummary[]): Record<string, number> {
  return Object.fromEntries(stages.flatMap((s) => [[`${prefix}/stage/${s.stage}`, s.trainSeconds], [`${prefix}/eval/${s.stage}`, s.evalSeconds]]));
}

export function assembleRunSummary(p: RunSummaryParts): RunSummary {
  const steps: Record<string, number> = {
    'eval/before': p.before.seconds,
    ...(p.analysis ? { analysis: p.analysis.seconds } : {}),
    ...stageTimes('run', p.stages),
    ...(p.baseline ? stageTimes(p.baseline.path, p.baseline.stages) : {}),
  };
  return {
    schema: RUN_SUMMARY_SCHEMA,
    apexVersion: p.apexVersion,
    begunByApexVersion: p.begunByApexVersion,
    configHash: configHash(p.config),
    config: p.config,
    run: p.run,
    backend: p.backend,
    seed: p.config.seed,
    baseModel: p.baseModel,
    data: p.data,
    perplexity: {
      before: p.before.value.perplexity,
      stages: p.stages.map((s) => s.eval.perplexity),
      final: p.stages[p.stages.length - 1]!.eval.perplexity,
      baseline: p.baseline?.stages.at(-1)?.eval.perplexity ?? null,
      baselineStages: p.baseline?.stages.map((s) => s.eval.perplexity) ?? [],
    },
    before: p.before.value,
    analysis: p.analysis,
    method: p.config.method,
    setting: p.config.setting,
    stages: p.stages,
    baseline: p.baseline,
    timings: {
      totalSeconds: Object.values(steps).reduce((a, b) => a + b, 0),
      thisInvocationSeconds: p.invocationSeconds,
      steps,
    },
    invocation: { start: p.start, skipped: p.skipped, startedAt: p.startedAt, finishedAt: new Date().toISOString() },
  };
}
