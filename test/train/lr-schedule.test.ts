import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { learningRate, planForStages, stageBaseRate, warmupSteps } from '../../src/train/lr-schedule.js';

describe('learning-rate plan (§5)', () => {
  const single = { peakLr: 1e-3, totalSteps: 200, stageStarts: [0] };
  const twoStage = { peakLr: 1e-3, totalSteps: 200, stageStarts: [0, 100] };

  it('warms up linearly over 3% of all steps to the peak', () => {
    // 3% of 200 = 6 warm-up steps: 0, 1/6, ..., 1 at step 6.
    expect(learningRate(0, single)).toBe(0);
    expect(learningRate(3, single)).toBeCloseTo(5e-4, 15);
    expect(learningRate(6, single)).toBeCloseTo(1e-3, 15);
  });

  it('decays by cosine to 0 at the end of the run', () => {
    // step 103: progress (103-6)/194 = 0.5 -> half the peak
    expect(learningRate(103, single)).toBeCloseTo(5e-4, 15);
    // step 50: 1e-3 * 0.5 * (1 + cos(pi * 44/194)) = 8.783564079088476e-4
    expect(learningRate(50, single)).toBeCloseTo(8.783564079088476e-4, 15);
    expect(learningRate(200, single)).toBe(0);
    expect(learningRate(199, single)).toBeGreaterThan(0);
    expect(learningRate(5000, single)).toBe(0);
  });

  it('at a stage boundary re-warms to the current rate over 0.5% of the remaining steps, then cosines to 0', () => {
    // the first segment's rate at step 100: 1e-3 * 0.5 * (1 + cos(pi * 94/194))
    const current = 5.242811110572242e-4;
    for (const s of [0, 6, 50, 99]) expect(learningRate(s, twoStage)).toBe(learningRate(s, single));
    // remaining 100 steps: warm-up floor(0.5) = 0 steps, so the stage starts at the current rate
    expect(learningRate(100, twoStage)).toBeCloseTo(current, 15);
    // step 150: current * 0.5 * (1 + cos(pi * 50/100))
    expect(learningRate(150, twoStage)).toBeCloseTo(current / 2, 15);
    // step 199: current * 0.5 * (1 + cos(pi * 99/100))
    expect(learningRate(199, twoStage)).toBeCloseTo(1.2935053984695354e-7, 18);
    expect(learningRate(200, twoStage)).toBe(0);
  });

  it('uses floor(0.5% of the remaining steps) for longer re-warm-ups', () => {
    const plan = planForStages(2e-5, [1000, 1000, 1000]);
    expect(plan).toEqual({ peakLr: 2e-5, totalSteps: 3000, stageStarts: [0, 1000, 2000] });
    // first warm-up: 90 steps; second stage: remaining 2000 -> 10 steps; third: 1000 -> 5 steps
    expect(learningRate(90, plan)).toBeCloseTo(2e-5, 18);
    expect(learningRate(45, plan)).toBeCloseTo(1e-5, 18);
    const atSecond = 2e-5 * 0.5 * (1 + Math.cos((Math.PI * (1000 - 90)) / 2910));
    expect(learningRate(1005, plan)).toBeCloseTo(atSecond / 2, 18);
    expect(learningRate(1010, plan)).toBeCloseTo(atSecond, 18);
    const atThird = atSecond * 0.5 * (1 + Math.cos((Math.PI * (1000 - 10)) / 1990));
    expect(learningRate(2005, plan)).toBeCloseTo(atThird, 18);
    expect(learningRate(2004, plan)).toBeCloseTo((atThird * 4) / 5, 18);
    expect(learningRate(3000, plan)).toBe(0);
  });

  it('floors the warm-up counts without a minimum, as the reference (no step spent at rate 0)', () => {
    expect(warmupSteps(10, 0.03)).toBe(0);
    expect(warmupSteps(34, 0.03)).toBe(1);
    expect(warmupSteps(199, 0.005)).toBe(0);
    expect(warmupSteps(200, 0.005)).toBe(1);
    expect(warmupSteps(0, 0.03)).toBe(0);
    const plan = { peakLr: 1, totalSteps: 4, stageStarts: [0, 2] };
    // segment 0: w=0, n=4: step j -> 0.5*(1+cos(pi*j/4)): 1, 0.8536, (0.5 at 2)
    expect(learningRate(0, plan)).toBe(1);
    expect(learningRate(1, plan)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    // segment 1 from step 2: base 0.5, w=0, n=2: step 2 -> 0.5, step 3 -> 0.25
    expect(learningRate(2, plan)).toBeCloseTo(0.5, 15);
    expect(learningRate(3, plan)).toBeCloseTo(0.25, 15);
    // the demonstration's 36 + 36 steps: 2 warm-up steps, then stage 2 starts at the current rate
    const demo = planForStages(1e-3, [36, 36]);
    expect(learningRate(0, demo)).toBe(0);
    expect(learningRate(2, demo)).toBe(1e-3);
    const atBoundary = 1e-3 * 0.5 * (1 + Math.cos((Math.PI * 34) / 70));
    expect(learningRate(36, demo)).toBeCloseTo(atBoundary, 18);
    expect(learningRate(37, demo)).toBeCloseTo(atBoundary * 0.5 * (1 + Math.cos(Math.PI / 36)), 18);
  });

  it('a stage that trains other steps than planned continues from the rate the previous stage would have used next', () => {
    // Stage 1 ran 40 of a planned 3 × 40 (total 120, warm-up 3); stage 2 now trains 10, stage 3 then 10.
    const ran = planForStages(1e-3, [40, 40, 40]);
    const plan = planForStages(1e-3, [40, 10, 10], [120]);
    expect(plan).toEqual({ peakLr: 1e-3, totalSteps: 60, stageStarts: [0, 40, 50], segmentTotals: [120, 60, 60] });
    for (let s = 0; s < 40; s++) expect(learningRate(s, plan), `stage 1, step ${s}`).toBe(learningRate(s, ran));
    // By hand: the first segment at j = 40 (n = 120, w = 3), then a cosine over the 20 steps left (w = ⌊0.1⌋ = 0).
    const next = 1e-3 * 0.5 * (1 + Math.cos((Math.PI * (40 - 3)) / (120 - 3)));
    expect(learningRate(40, plan)).toBeCloseTo(next, 18);
    expect(learningRate(45, plan)).toBeCloseTo(next * 0.5 * (1 + Math.cos((Math.PI * 5) / 20)), 18);
    // Stage 3 continues stage 2's segment (n = 20), its own over the 10 steps left.
    const third = next * 0.5 * (1 + Math.cos((Math.PI * 10) / 20));
    expect(learningRate(50, plan)).toBeCloseTo(third, 18);
    expect(learningRate(60, plan)).toBe(0);
    // A run that kept its plan records no segment totals: the same object as before them.
    expect(planForStages(1e-3, [40, 40, 40], [120, 120])).toEqual(ran);
    expect(stageBaseRate(45, plan)).toBeCloseTo(next, 18);
    expect(stageBaseRate(10, plan)).toBe(1e-3);
    // With a re-warm-up the stage starts at 0 and climbs back to its base: 1000 steps ran of a planned
    // 3 × 1000, then 500 (and 500): 1000 left, warm-up ⌊5⌋ = 5.
    const long = planForStages(2e-5, [1000, 500, 500], [3000]);
    const base = 2e-5 * 0.5 * (1 + Math.cos((Math.PI * (1000 - 90)) / 2910));
    expect(learningRate(1000, long)).toBe(0);
    expect(stageBaseRate(1000, long)).toBeCloseTo(base, 18);
    expect(learningRate(1005, long)).toBeCloseTo(base, 18);
    expect(() => learningRate(0, { ...plan, segmentTotals: [120, 40, 60] })).toThrow(UsageError);
    expect(() => learningRate(0, { ...plan, segmentTotals: [120, 60] })).toThrow(UsageError);
  });

  it('rejects malformed plans', () => {
    expect(() => learningRate(0, { peakLr: 1, totalSteps: 10, stageStarts: [5, 3] })).toThrow(UsageError);
    expect(() => learningRate(0, { peakLr: 1, totalSteps: 10, stageStarts: [10] })).toThrow(UsageError);
    expect(() => learningRate(0, { peakLr: -1, totalSteps: 10, stageStarts: [] })).toThrow(UsageError);
    expect(() => planForStages(1, [0])).toThrow(UsageError);
  });
});
