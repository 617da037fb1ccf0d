/**
 * `apex run --dry-run`: what a run of this config would do, found by everything a run checks
 * before its first training step, with nothing written (no run folder, lock or record): the
 * checks made before the run folder exists (run.ts checkBeforeWriting), what the run folder
 * holds (a new run, this config's run to resume, or a refusal), the data read and tokenized, and
 * for the run's line and the vanilla baseline the first stage planned by the stage trainer itself
 * (train/stage.ts, dry run: steps, tokens, trainable parameters, the memory estimate, which
 * refuses a budget it exceeds). Later stages train the same shapes for the same budget; only
 * with `stages.decay_k` do they select fewer units.
 */
import { join, resolve } from 'node:path';
import type { ResolvedRunConfig } from '../run/config.js';
import { RUN_CONFIG_NAMES, runStage, type StageResult } from '../train/stage.js';
import { checkBeforeWriting } from './run.js';
import { loadRunData } from './run-data.js';
import { BASELINE_FOLDER, stageSettings, type TrainingLine } from './run-stage-settings.js';
import { RunState, type RunStart } from './run-state.js';

export interface RunLinePlan {
  readonly name: string;
  readonly method: string;
  readonly setting: string | null;
  readonly stages: number;
  /** Stage 1 as the stage trainer plans it (status `planned`). */
  readonly stage1: StageResult;
  /** Tokens trained over all stages of the line. */
  readonly tokens: number;
}

export interface RunPlan {
  readonly dryRun: true;
  readonly run: string;
  /** What the run folder holds: a new run, this config's run (resumed: its completed steps skipped), or discarded (--force). */
  readonly start: RunStart;
  readonly completedSteps: number;
  readonly model: { readonly dir: string; readonly parameters: number; readonly layers: number };
  readonly backend: string;
  /** Sequences of each set; calibration: what the analysis reads (method apex), else null. */
  readonly data: { readonly train: number; readonly eval: number; readonly calibration: number | null; readonly seqLen: number };
  readonly lines: RunLinePlan[];
}

export async function planRun(options: {
  readonly resolved: ResolvedRunConfig;
  readonly force?: boolean;
  readonly signal?: AbortSignal;
  readonly status?: (message: string) => void;
  readonly onWarning?: (message: string) => void;
}): Promise<RunPlan> {
  const { config } = options.resolved;
  const status = options.status ?? (() => {});
  const onWarning = options.onWarning ?? (() => {});
  const signal = options.signal;
  const run = resolve(config.output);
  const { base, tokenizer, backend } = await checkBeforeWriting(config, signal, status);
  const folder = await RunState.peek(run, config, { force: options.force ?? false });
  status('loading data');
  const data = await loadRunData(config, tokenizer, onWarning, signal, status);
  const lines: TrainingLine[] = [
    { key: 'run', name: config.method === 'apex' ? 'APEX' : config.method, method: config.method, folder: run },
    ...(config.baseline.vanilla ? [{ key: BASELINE_FOLDER, name: 'vanilla', method: 'vanilla' as const, folder: join(run, BASELINE_FOLDER) }] : []),
  ];
  const planned: RunLinePlan[] = [];
  for (const line of lines) {
    const stage1 = await runStage({
      ...stageSettings(config, line, 1, config.model),
      dryRun: true,
      // As a fresh stage: what the folder holds is the run's business (RunState.peek above).
      resume: false,
      force: true,
      names: RUN_CONFIG_NAMES,
      modelDir: base.dir,
      modelSource: base.resolved,
      train: data.train,
      ...(config.eval.every !== null ? { eval: data.eval } : {}),
      ...(signal ? { signal } : {}),
      progress: (m) => status(`${line.name}: ${m}`),
      onWarning,
    });
    // The run analyses once, before its stages (data.calibration), not inside stage 1.
    const plan = { ...stage1, plan: { ...stage1.plan!, analysisSequences: null } };
    planned.push({ name: line.name, method: line.method, setting: stage1.setting ?? null, stages: config.stages.count, stage1: plan, tokens: config.stages.count * stage1.tokens });
  }
  return {
    dryRun: true,
    run,
    start: folder.start,
    completedSteps: folder.completedSteps,
    model: { dir: base.dir, parameters: base.parameters, layers: base.spec.numLayers },
    backend: `${backend.name} (${backend.detail})`,
    data: { train: data.train.sequences.length, eval: data.eval.sequences.length, calibration: data.calibration?.sequences.length ?? null, seqLen: data.train.seqLen },
    lines: planned,
  };
}
