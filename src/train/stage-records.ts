/**
 * What a stage reads from and writes into the `apex_run.json` records of a run (the shared
 * provenance format of src/pipeline/provenance.ts, with the trainer's settings and results
 * under `details`):
 *
 * - the earlier stages' step counts and stage total, so the learning-rate plan of stage n is
 *   the same plan stages 1 … n − 1 followed (§5: one plan over all stages);
 * - the trainable-parameter count of an APEX run, for `--match-params`;
 * - the seeds of a stage, derived from the run seed so every stage gets its own stream.
 */
import { access, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import type { ModelSpec } from '../model/model-spec.js';
import { readJson, stageDir } from '../pipeline/expand-paths.js';
import { PROVENANCE_FILE } from '../pipeline/provenance.js';
import { Rng } from '../util/rng.js';
import { loraRankForParamCount } from './lora.js';
import { planForStages, stageBaseRate, validateLrPlan, type LrPlan } from './lr-schedule.js';
import { modelParamCount, type TrainableSummary } from './trainable-params.js';

/** The trainer's part of a stage's apex_run.json (`details`). */
export interface StageDetails {
  readonly stage: number;
  readonly total_stages: number;
  readonly method: string;
  readonly setting: string | null;
  readonly steps: number;
  readonly tokens_per_step: number;
  readonly trainable: TrainableSummary;
  readonly [key: string]: unknown;
}

async function stageDetails(run: string, stage: number): Promise<Partial<StageDetails> | undefined> {
  const record = await readJson(join(stageDir(run, stage), PROVENANCE_FILE));
  const details = record && typeof record === 'object' ? (record as Record<string, unknown>).details : undefined;
  return details && typeof details === 'object' ? (details as Partial<StageDetails>) : undefined;
}

/**
 * Refuses a stage recorded as complete whose scores or metrics (as recorded) are missing or
 * changed size: the next stage's selection and the report's curves and heatmaps read them.
 * InputError STAGE_OUTPUT_MISSING (exit 3), naming the files. The operators and trained tensors
 * are read again only to fuse, which checks them itself: a user may delete them after fusion.
 */
const READ_AFTER_FUSION = new Set(['scores.safetensors', 'metrics.jsonl']);

export async function checkStageOutputs(run: string, stage: number, fix: string): Promise<void> {
  const dir = stageDir(run, stage);
  const record = (await readJson(join(dir, PROVENANCE_FILE))) as { outputs?: { stage?: { files?: { file: string; bytes: number }[] } } } | undefined;
  const files = (record?.outputs?.stage?.files ?? []).filter((f) => READ_AFTER_FUSION.has(f.file));
  const wrong: string[] = [];
  for (const f of files) {
    const st = await stat(join(dir, f.file)).catch(() => undefined);
    if (st === undefined) wrong.push(`${f.file} is missing`);
    else if (st.size !== f.bytes) wrong.push(`${f.file} has ${st.size} bytes, ${f.bytes} recorded`);
  }
  if (wrong.length > 0) {
    throw new InputError(`${dir} is recorded as complete, but ${wrong.join(', ')} (${join(dir, PROVENANCE_FILE)}); restore them, or ${fix}`, 'STAGE_OUTPUT_MISSING');
  }
}

export interface StageSeeds {
  readonly operators: number;
  readonly data: number;
  readonly lora: number;
}

/** Seeds of stage `stage`: the stage-th triple drawn from Rng(seed). */
export function stageSeeds(seed: number, stage: number): StageSeeds {
  const rng = new Rng(seed);
  let seeds: StageSeeds = { operators: 0, data: 0, lora: 0 };
  for (let s = 1; s <= stage; s++) seeds = { operators: rng.nextUint32(), data: rng.nextUint32(), lora: rng.nextUint32() };
  return seeds;
}

/**
 * The learning-rate plan of the run as stage `stage` sees it: the recorded step counts of the
 * earlier stages, this stage's steps for itself and every later one. The stage total is the
 * given one, else the one the previous stage recorded, else `stage`; the peak rate is `lr` when
 * given, else the one the previous stage's plan holds, else `defaultLr`.
 *
 * When the stage total and the peak rate are the previous stage's, the stages that ran keep the
 * totals they ran with (lr-schedule.ts `segmentTotals`): a stage that trains other steps than
 * were planned for it continues from the rate the previous stage would have used next. A new
 * stage total or peak rate makes the plan again, as if the run had been planned that way from
 * its start (the rate then jumps at this stage's start); both are said. `previous` is the record
 * of stage `stage - 1` (read here anyway), for the caller's own comparisons.
 */
export async function runLrPlan(
  run: string,
  stage: number,
  totalStages: number | undefined,
  steps: number,
  lr: number | undefined,
  defaultLr: number,
): Promise<{ plan: LrPlan; totalStages: number; offset: number; notes: string[]; rebuilt?: LrPlan; previous?: Partial<StageDetails> }> {
  const notes: string[] = [];
  const stageSteps: number[] = [];
  let recordedTotal: number | undefined;
  let previousPlan: LrPlan | undefined;
  let previous: Partial<StageDetails> | undefined;
  for (let s = 1; s < stage; s++) {
    const d = await stageDetails(run, s);
    if (d?.steps !== undefined && Number.isSafeInteger(d.steps) && d.steps > 0) stageSteps.push(d.steps);
    else {
      notes.push(`stage ${s} of ${run} has no record of its steps; the learning-rate plan assumes it ran ${steps} like this one`);
      stageSteps.push(steps);
    }
    if (s === stage - 1) {
      previous = d;
      if (d?.total_stages !== undefined) recordedTotal = d.total_stages;
      previousPlan = recordedPlan(d?.lr_plan);
    }
  }
  const total = totalStages ?? recordedTotal ?? stage;
  if (total < stage) throw new UsageError(`the run was planned for ${total} stage${total === 1 ? '' : 's'} (recorded by stage ${stage - 1}); pass --total-stages ${stage} or more to train stage ${stage}`);
  const peakLr = lr ?? previousPlan?.peakLr ?? defaultLr;
  const newTotal = totalStages !== undefined && recordedTotal !== undefined && totalStages !== recordedTotal;
  if (newTotal) notes.push(`--total-stages ${totalStages} differs from the ${recordedTotal} stages stage ${stage - 1} was planned with; the learning-rate plan changes from here on`);
  const newPeak = previousPlan !== undefined && peakLr !== previousPlan.peakLr;
  if (newPeak) notes.push(`--lr ${peakLr} differs from the ${previousPlan!.peakLr} stage ${stage - 1} was planned with; the learning-rate plan is made again with ${peakLr} from here on`);
  const offset = stageSteps.reduce((a, b) => a + b, 0);
  for (let s = stage; s <= total; s++) stageSteps.push(steps);
  // The totals the earlier stages began with, from the previous stage's plan, when it matches
  // the steps they ran (a record from before segmentTotals: every stage began with its total).
  const known = previous !== undefined ? { previous } : {};
  if (previousPlan !== undefined && !newTotal && !newPeak && sameStarts(previousPlan, stageSteps.slice(0, stage))) {
    const ranWith = Array.from({ length: stage - 1 }, (_, i) => previousPlan!.segmentTotals?.[i] ?? previousPlan!.totalSteps);
    const planned = previousPlan.stageStarts.length >= stage ? (previousPlan.stageStarts[stage] ?? previousPlan.totalSteps) - previousPlan.stageStarts[stage - 1]! : undefined;
    const plan = planForStages(peakLr, stageSteps, ranWith);
    if (plan.totalSteps !== previousPlan.totalSteps) {
      notes.push(
        `stage ${stage} trains ${steps} steps${planned !== undefined ? `, where stage ${stage - 1} planned ${planned}` : ''}: the learning rate continues from the ${stageBaseRate(offset, plan).toExponential(3)} ` +
          `stage ${stage - 1} would have used next, over the ${plan.totalSteps - offset} steps now left in the run`,
      );
    }
    // What apex made before segmentTotals (the plan rebuilt from this stage's steps), for resuming a checkpoint it wrote.
    const rebuilt = plan.segmentTotals !== undefined ? planForStages(peakLr, stageSteps) : undefined;
    return { plan, totalStages: total, offset, notes, ...(rebuilt ? { rebuilt } : {}), ...known };
  }
  return { plan: planForStages(peakLr, stageSteps), totalStages: total, offset, notes, ...known };
}

/** A recorded plan, when the record holds a well-formed one. */
function recordedPlan(value: unknown): LrPlan | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const p = value as LrPlan;
  if (typeof p.peakLr !== 'number' || typeof p.totalSteps !== 'number' || !Array.isArray(p.stageStarts)) return undefined;
  try {
    validateLrPlan(p);
    return p;
  } catch {
    return undefined;
  }
}

/** Whether `plan` starts its first stages where these step counts put them. */
function sameStarts(plan: LrPlan, steps: readonly number[]): boolean {
  let at = 0;
  return steps.every((n, i) => {
    const ok = plan.stageStarts[i] === at;
    at += n;
    return ok;
  });
}

/**
 * The LoRA rank whose trainable count is closest to an APEX run's: `path` is a stage folder
 * (holding apex_run.json) or a run folder (its stage `stage`, else its highest stage).
 */
export async function matchedLoraRank(path: string, stage: number, spec: ModelSpec, name = '--match-params'): Promise<{ rank: number; target: number; record: string }> {
  const candidates = [join(path, PROVENANCE_FILE), join(stageDir(path, stage), PROVENANCE_FILE)];
  const stages = await readdir(join(path, 'stages')).catch(() => [] as string[]);
  for (const s of stages.filter((n) => /^[1-9][0-9]*$/.test(n)).map(Number).sort((a, b) => b - a)) candidates.push(join(stageDir(path, s), PROVENANCE_FILE));
  for (const file of candidates) {
    if (!(await access(file).then(() => true, () => false))) continue;
    const record = (await readJson(file)) as { details?: Partial<StageDetails> } | undefined;
    const target = record?.details?.trainable?.trainable;
    if (record?.details?.method !== 'apex' || typeof target !== 'number' || !(target > 0)) {
      throw new InputError(`${file}: not the record of an APEX stage with a trainable-parameter count (${name} needs an APEX run)`, 'MATCH_PARAMS');
    }
    // Matching another model's run would size LoRA for a model it is not trained on.
    const theirs = record.details.trainable?.modelParams;
    if (typeof theirs === 'number' && theirs !== modelParamCount(spec)) {
      throw new InputError(`${file}: that APEX run trained a model of ${theirs.toLocaleString('en-US')} parameters, this one has ${modelParamCount(spec).toLocaleString('en-US')} (${name} needs an APEX run of the same model)`, 'MATCH_PARAMS');
    }
    return { rank: loraRankForParamCount(spec, target), target, record: file };
  }
  throw new InputError(`${name} ${path}: no apex_run.json there or in its stages/ (give an APEX run or stage folder)`, 'MATCH_PARAMS');
}

/** What a complete stage's record is compared with when `--resume` meets it. */
export interface CompletedStageRequest {
  readonly method: string;
  readonly setting: string | null;
  /** The peak learning rate, only when given explicitly (else the run's plan decides it). */
  readonly lr: number | undefined;
  readonly optimizer: { readonly beta1: number; readonly beta2: number; readonly weightDecay: number; readonly gradClip: number; readonly batchSize: number; readonly gradAccum: number };
  readonly budget: { readonly steps: number } | { readonly tokens: number };
  readonly selection: unknown;
  /** LoRA rank and alpha when given explicitly (a matched rank is recorded, not asked). */
  readonly lora: { readonly rank?: number; readonly alpha?: number } | undefined;
  readonly totalStages: number | undefined;
  readonly train: { readonly sha256: readonly string[]; readonly seqLen: number; readonly sequences: number };
}

/**
 * "name then, now" for every setting of a complete stage's record that the request contradicts.
 * `--resume` on a complete stage reuses it; with other settings it would report a stage that was
 * not trained as asked (it used to answer "already complete" under the new method's name).
 * Entries a record lacks (older versions) are not compared.
 */
export function completedStageChanges(d: Partial<StageDetails>, now: CompletedStageRequest): string[] {
  const changes: string[] = [];
  const show = (v: unknown) => JSON.stringify(v);
  const compare = (name: string, then: unknown, asked: unknown) => {
    if (then !== undefined && asked !== undefined && show(then) !== show(asked)) changes.push(`${name} ${show(then)} then, ${show(asked)} now`);
  };
  compare('method', d.method, now.method);
  compare('setting', d.setting, now.setting);
  const o = d.optimizer as Partial<Record<'lr' | 'beta1' | 'beta2' | 'weightDecay' | 'gradClip' | 'batchSize' | 'gradAccum', number>> | undefined;
  compare('learning rate', o?.lr, now.lr);
  compare('AdamW beta1', o?.beta1, now.optimizer.beta1);
  compare('AdamW beta2', o?.beta2, now.optimizer.beta2);
  compare('weight decay', o?.weightDecay, now.optimizer.weightDecay);
  compare('gradient clipping', o?.gradClip, now.optimizer.gradClip);
  compare('batch size', o?.batchSize, now.optimizer.batchSize);
  compare('gradient accumulation', o?.gradAccum, now.optimizer.gradAccum);
  compare('budget', d.budget, now.budget);
  compare('total stages', d.total_stages, now.totalStages);
  if (now.method === 'apex') compare('selection settings', d.selection_settings ?? undefined, now.selection);
  const lora = d.lora as { rank?: number; alpha?: number } | null | undefined;
  if (lora) {
    compare('LoRA rank', lora.rank, now.lora?.rank);
    compare('LoRA alpha', lora.alpha, now.lora?.alpha);
  }
  const train = (d.data as { train?: Partial<{ sha256: string[]; seqLen: number; sequences: number }> } | undefined)?.train;
  if (train !== undefined) {
    compare('training data files (sha256)', train.sha256, now.train.sha256);
    compare('sequence length', train.seqLen, now.train.seqLen);
    compare('training sequences', train.sequences, now.train.sequences);
  }
  return changes;
}
