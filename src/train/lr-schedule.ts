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
 */
import { UsageError } from '../errors.js';

export interface LrPlan {
  /** The rate warm-up reaches at the end of the first stage's warm-up. */
  readonly peakLr: number;
  /** Optimizer steps over all stages of the run. */
  readonly totalSteps: number;
  /** Global step at which each stage begins, ascending; 0 (the first stage) may be omitted. */
  readonly stageStarts: readonly number[];
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
}

/** The learning rate of global step `step` under `plan` (see the module header). */
export function learningRate(step: number, plan: LrPlan): number {
  validateLrPlan(plan);
  if (step >= plan.totalSteps) return 0;
  if (step < 0) throw new UsageError(`step must be >= 0, got ${step}`);
  const n0 = plan.totalSteps;
  let base = plan.peakLr;
  let start = 0;
  let length = n0;
  let warmup = warmupSteps(n0, FIRST_WARMUP_FRACTION);
  for (const boundary of plan.stageStarts) {
    if (boundary === 0) continue;
    if (boundary > step) break;
    base = cosineWithWarmup(boundary - start, base, length, warmup);
    start = boundary;
    length = n0 - boundary;
    warmup = warmupSteps(length, STAGE_WARMUP_FRACTION);
  }
  return cosineWithWarmup(step - start, base, length, warmup);
}

/** The plan of a run whose stages have the given step counts, in order. */
export function planForStages(peakLr: number, stageSteps: readonly number[]): LrPlan {
  const stageStarts: number[] = [];
  let total = 0;
  for (const steps of stageSteps) {
    if (!Number.isInteger(steps) || steps <= 0) throw new UsageError(`steps per stage must be integers > 0, got ${steps}`);
    stageStarts.push(total);
    total += steps;
  }
  const plan = { peakLr, totalSteps: total, stageStarts };
  validateLrPlan(plan);
  return plan;
}
