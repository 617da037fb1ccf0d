/**
 * The learning-rate plan of APEX-METHOD §5 across all stages of a run, as a pure function of
 * the global optimizer step.
 *
 * Definitions (steps are 0-based global optimizer updates; `learningRate(s)` is the rate the
 * s-th update uses, so `learningRate(totalSteps)` is the rate "after the last update" = 0):
 *
 * The shape of one segment is the Hugging Face cosine-with-warm-up schedule the reference
 * code uses (transformers `get_cosine_schedule_with_warmup`), with base rate `base`, length
 * `n` steps and `w` warm-up steps, evaluated at the segment-local step j:
 *
 *     j < w:  base · j / w
 *     j ≥ w:  base · ½ · (1 + cos(π · min(1, (j − w) / max(1, n − w))))
 *
 * so a segment starts at 0, reaches `base` at j = w, and reaches 0 at j = n.
 *
 * Segment 0 covers the whole run: base = peakLr, n = totalSteps, w = ⌊0.03·n⌋.
 * Every later stage start b (0 < b < totalSteps) opens a new segment that replaces the
 * previous one from b on, as the reference does when it rebuilds the optimizer at a stage
 * boundary: base = the rate the previous segment gives at step b (the "current" rate),
 * n = totalSteps − b (the remaining steps), w = ⌊0.005·n⌋, local step j = s − b.
 * The warm-up counts are floored without a minimum, as in the reference: a run of < 34 steps
 * has no first warm-up and a stage with < 200 steps left starts straight at the current rate
 * (a forced 1-step warm-up would spend that step at rate 0). w = 0 is well defined above:
 * the cosine's denominator is max(1, n − w).
 *
 * Steps at or past totalSteps have rate 0.
 *
 * A later stage may train other step counts than the earlier stages planned for it (`apex
 * finetune --stage 2 --steps …`). The segments of the stages that already ran keep the total
 * they ran with (`segmentTotals`, the run's planned total when each stage began): the rate a
 * new stage continues from is the one the previous stage would have used next, whatever the
 * new remainder is; the new stage's segment then covers its own remaining steps.
 */
import { UsageError } from '../errors.js';

export interface LrPlan {
  /** The rate warm-up reaches at the end of the first stage's warm-up. */
  readonly peakLr: number;
  /** Optimizer steps over all stages of the run. */
  readonly totalSteps: number;
  /** Global step at which each stage begins, ascending; 0 (the first stage) may be omitted. */
  readonly stageStarts: readonly number[];
  /**
   * Per stage start: the run's planned total steps when that stage began (absent: totalSteps for
   * every stage, a run whose stages all kept the first plan).
   */
  readonly segmentTotals?: readonly number[];
}

/** Fraction of all steps used for the first warm-up. */
export const FIRST_WARMUP_FRACTION = 0.03;
/** Fraction of the remaining steps used for the re-warm-up at a stage boundary. */
export const STAGE_WARMUP_FRACTION = 0.005;

/** Warm-up steps of a segment of n steps with the given fraction: ⌊n · fraction⌋, possibly 0. */
export function warmupSteps(n: number, fraction: number): number {
  return n > 0 ? Math.floor(n * fraction) : 0;
}

/** The schedule shape of one segment at local step j (see the module header). */
export function cosineWithWarmup(j: number, base: number, n: number, w: number): number {
  if (j < w) return (base * j) / w;
  const progress = Math.min(1, (j - w) / Math.max(1, n - w));
  return Math.max(0, base * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Throws a UsageError unless the plan is well formed. */
export function validateLrPlan(plan: LrPlan): void {
  const { peakLr, totalSteps, stageStarts } = plan;
  if (!Number.isFinite(peakLr) || peakLr < 0) throw new UsageError(`learning rate must be a finite number >= 0, got ${peakLr}`);
  if (!Number.isInteger(totalSteps) || totalSteps < 0) {
    throw new UsageError(`total steps must be an integer >= 0, got ${totalSteps}`);
  }
  let previous = -1;
  for (const start of stageStarts) {
    if (!Number.isInteger(start) || start <= previous || start < 0 || (start >= totalSteps && start > 0)) {
      throw new UsageError(
        `stage starts must be ascending integers in [0, ${totalSteps}), got [${stageStarts.join(', ')}]`,
      );
    }
    previous = start;
  }
  const totals = plan.segmentTotals;
  if (totals !== undefined) {
    if (stageStarts[0] !== 0 || totals.length !== stageStarts.length || totals.some((t, i) => !Number.isInteger(t) || t <= stageStarts[i]! || (i === totals.length - 1 && t !== totalSteps))) {
      throw new UsageError(`segment totals must hold, per stage start (the first at 0), an integer past it (the last one the total ${totalSteps}), got [${totals.join(', ')}]`);
    }
  }
}

/** The learning rate of global step `step` under `plan` (see the module header). */
export function learningRate(step: number, plan: LrPlan): number {
  validateLrPlan(plan);
  if (step >= plan.totalSteps) return 0;
  if (step < 0) throw new UsageError(`step must be >= 0, got ${step}`);
  const { base, start, length, warmup } = segmentAt(step, plan);
  return cosineWithWarmup(step - start, base, length, warmup);
}

/**
 * The rate the stage holding `step` continues from (its segment's base: the first stage's peak,
 * or the rate the previous segment gives at the stage's start); what its warm-up climbs back to.
 */
export function stageBaseRate(step: number, plan: LrPlan): number {
  validateLrPlan(plan);
  return segmentAt(step, plan).base;
}

function segmentAt(step: number, plan: LrPlan): { base: number; start: number; length: number; warmup: number } {
  const totalAt = (i: number) => plan.segmentTotals?.[i] ?? plan.totalSteps;
  const n0 = totalAt(0); // segmentTotals, when given, start with the first stage's (validateLrPlan)
  let base = plan.peakLr;
  let start = 0;
  let length = n0;
  let warmup = warmupSteps(n0, FIRST_WARMUP_FRACTION);
  for (const [i, boundary] of plan.stageStarts.entries()) {
    if (boundary === 0) continue;
    if (boundary > step) break;
    base = cosineWithWarmup(boundary - start, base, length, warmup);
    start = boundary;
    length = totalAt(i) - boundary;
    warmup = warmupSteps(length, STAGE_WARMUP_FRACTION);
  }
  return { base, start, length, warmup };
}

/**
 * The plan of a run whose stages have the given step counts, in order. `ranWith` holds, for the
 * first stages (those that already ran), the planned total each began with; the others begin
 * with this plan's total.
 */
export function planForStages(peakLr: number, stageSteps: readonly number[], ranWith: readonly number[] = []): LrPlan {
  const stageStarts: number[] = [];
  let total = 0;
  for (const steps of stageSteps) {
    if (!Number.isInteger(steps) || steps <= 0) throw new UsageError(`steps per stage must be integers > 0, got ${steps}`);
    stageStarts.push(total);
    total += steps;
  }
  const segmentTotals = stageStarts.map((_, i) => ranWith[i] ?? total);
  // A run that kept its first plan records none (the plans of earlier versions, equal bit for bit).
  const plan = segmentTotals.every((t) => t === total) ? { peakLr, totalSteps: total, stageStarts } : { peakLr, totalSteps: total, stageStarts, segmentTotals };
  validateLrPlan(plan);
  return plan;
}
