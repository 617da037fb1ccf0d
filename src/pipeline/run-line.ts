/**
 * Trains one line of a run — the run's own stages, or the vanilla baseline's — stage by stage,
 * and measures held-out perplexity of every fused stage model. A stage whose record
 * (`stages/<n>/apex_run.json`) and fused model (`stages/<n>/model/apex_run.json`) are both on
 * disk is complete and is not touched; an unfinished one resumes from its last training
 * checkpoint; once a stage is trained again, every later stage of the line is trained again
 * too (its input changed). Evaluations are recorded in run.json against the stage record they
 * measured, so a retrained stage is always re-measured.
 */
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { InputError } from '../errors.js';
import { RUN_CONFIG_NAMES, runStage } from '../train/stage.js';
import { checkStageOutputs } from '../train/stage-records.js';
import type { StepReport } from '../train/trainer.js';
import { readJson, stageDir } from './expand-paths.js';
import { fusedModelState } from './fused-model-state.js';
import { PROVENANCE_FILE } from './provenance.js';
import { evalSettings, type RunContext } from './run-context.js';
import { evaluateCheckpoint, type HeldOutEval } from './run-eval.js';
import type { StageSummary } from './run-summary.js';
import { stageSettings, type TrainingLine } from './run-stage-settings.js';

export interface LineOutcome {
  readonly stages: StageSummary[];
  /** Keys of the work found complete and not redone. */
  readonly skipped: string[];
}

/** The trainer's record of a finished stage (the fields apex run reads from `details`). */
interface StageRecord {
  readonly finished_at: string;
  readonly details: {
    readonly steps: number;
    readonly tokens_per_step: number;
    readonly trainable: { readonly trainable: number; readonly fraction: number };
    readonly results: { readonly final_loss: number | null; readonly elapsed_s: number };
  };
}

interface EvalRecord extends HeldOutEval {
  /** `finished_at` of the stage record that was measured. */
  readonly stageFinishedAt: string;
}

/**
 * A stage is done when its training record exists and its fused model is complete and
 * verified against the records (fused-model-state.ts); otherwise runStage continues it, which
 * for a trained stage only fuses again.
 */
export async function stageComplete(lineFolder: string, n: number, options: { previousFusedAgain?: boolean } = {}): Promise<boolean> {
  if (!existsSync(join(stageDir(lineFolder, n), PROVENANCE_FILE))) return false;
  await checkStageOutputs(lineFolder, n, 'rerun with --force to train the run again');
  return (await fusedModelState(lineFolder, n, options)).kind === 'complete';
}

async function readStageRecord(dir: string): Promise<StageRecord> {
  const record = (await readJson(join(dir, PROVENANCE_FILE))) as Partial<StageRecord> | undefined;
  const d = record?.details;
  if (typeof record?.finished_at !== 'string' || !d || typeof d.steps !== 'number' || typeof d.tokens_per_step !== 'number' || !d.trainable || !d.results) {
    throw new InputError(`${join(dir, PROVENANCE_FILE)}: not a complete stage record (delete the stage folder, or rerun with --force)`, 'BAD_RECORD');
  }
  return record as StageRecord;
}

function stepLine(line: TrainingLine, r: StepReport): string {
  const evalText = r.eval ? ` · held-out ppl ${r.eval.ppl.toFixed(2)}` : '';
  return `${line.name} stage ${r.stage}: step ${r.step}/${r.steps} · loss ${r.loss.toFixed(4)} · lr ${r.lr.toExponential(2)} · ${Math.round(r.tokensPerSecond)} tok/s${evalText} · ETA ${Math.round(r.etaSeconds)}s`;
}

/**
 * The stage's messages, prefixed with the line's name: what a reader wants in the log (the
 * trainable-parameter count, resuming, the LoRA rank) as permanent lines, the rest (fusion and
 * writing progress) as transient status. Its per-step lines are dropped: onStep reports the
 * same steps with the line's name.
 */
function stageMessage(ctx: RunContext, line: TrainingLine, message: string): void {
  if (/^stage \d+ step \d+\//.test(message)) return;
  const keep = /^(trainable parameters|resuming|LoRA rank)/.test(message);
  (keep ? ctx.log : ctx.status)(`${line.name}: ${message}`);
}

export async function trainLine(ctx: RunContext, line: TrainingLine): Promise<LineOutcome> {
  const { config, state } = ctx;
  const stages: StageSummary[] = [];
  const skipped: string[] = [];
  let retrained = false;
  for (let n = 1; n <= config.stages.count; n++) {
    const dir = stageDir(line.folder, n);
    const stageKey = `${line.key}/stage/${n}`;
    if (!retrained && (await stageComplete(line.folder, n))) {
      skipped.push(stageKey);
      ctx.log(`${line.name} stage ${n}: complete, skipped (${relative(ctx.run, dir)})`);
    } else {
      const data = await ctx.data();
      // A stage that finished training but lacks its fused model (interrupted while fusing) is only
      // fused: say so, as the dry run's plan does ("trained, to be fused again"), not "training".
      const fuseOnly = !retrained && existsSync(join(dir, PROVENANCE_FILE));
      ctx.log(`${line.name} stage ${n} of ${config.stages.count}: ${fuseOnly ? 'trained, fusing its model' : 'training'}`);
      const settings = stageSettings(config, line, n, config.model);
      const result = await runStage({
        ...settings,
        // Continue an interrupted stage; start over a stage whose input changed.
        ...(retrained ? { resume: false, force: true } : { resume: existsSync(dir) }),
        argv: [...ctx.argv],
        resumeHint: 'run the same apex run command again to continue',
        names: RUN_CONFIG_NAMES,
        // The run holds its folder's lock throughout; a baseline trains in a folder of its own, which its stage locks.
        runLockHeld: line.folder === ctx.run,
        modelDir: ctx.modelDir,
        modelSource: ctx.modelSource,
        train: data.train,
        ...(config.eval.every !== null ? { eval: data.eval } : {}),
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        progress: (m) => stageMessage(ctx, line, m),
        onStep: (r) => ctx.status(stepLine(line, r)),
        onWarning: ctx.onWarning,
      });
      // A stage that had finished training and only lacked its fused model leaves later stages valid.
      if (result.status === 'trained') retrained = true;
    }
    const record = await readStageRecord(dir);
    const evalKey = `${line.key}/eval/${n}`;
    const known = state.completed<EvalRecord>(evalKey)?.result;
    let evaluation: { result: EvalRecord; seconds: number };
    if (known !== undefined && known.stageFinishedAt === record.finished_at) {
      skipped.push(evalKey);
      evaluation = { result: known, seconds: state.completed(evalKey)!.wallSeconds };
    } else {
      const data = await ctx.data();
      ctx.log(`${line.name} stage ${n}: held-out perplexity of ${relative(ctx.run, join(dir, 'model'))}`);
      const t0 = performance.now();
      const measured = await evaluateCheckpoint(join(dir, 'model'), data.eval, {
        ...evalSettings(ctx),
        onProgress: (t) => ctx.status(`${line.name} stage ${n} evaluation: ${t}`),
      });
      const seconds = (performance.now() - t0) / 1000;
      const result: EvalRecord = { ...measured, stageFinishedAt: record.finished_at };
      await state.complete(evalKey, seconds, result);
      evaluation = { result, seconds };
    }
    const { stageFinishedAt: _measured, ...heldOut } = evaluation.result;
    ctx.log(`${line.name} stage ${n}: held-out perplexity ${heldOut.perplexity.toFixed(3)}`);
    const d = record.details;
    stages.push({
      stage: n,
      path: relative(ctx.run, dir),
      model: relative(ctx.run, join(dir, 'model')),
      eval: heldOut,
      steps: d.steps,
      tokens: d.steps * d.tokens_per_step,
      trainableParams: d.trainable.trainable,
      trainableFraction: d.trainable.fraction,
      finalTrainLoss: d.results.final_loss,
      trainSeconds: d.results.elapsed_s,
      evalSeconds: evaluation.seconds,
    });
  }
  return { stages, skipped };
}
