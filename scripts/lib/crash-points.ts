/**
 * One kill point of the crash harness, start to finish: start the scenario's command in a
 * fresh folder, SIGKILL it at the planned moment, audit what is left (nothing new, or complete
 * verified results), continue (`--resume` / rerun), audit again, and compare the final
 * artefacts with the uninterrupted reference run (max |Δ| ≤ 1e-6, same loss sequence).
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../src/util/rng.js';
import { auditOutput } from './crash-audit.js';
import { compareMetrics, maxTensorDifference } from './crash-compare.js';
import { runApex, type KillPlan } from './crash-process.js';
import type { Scenario } from './crash-scenarios.js';

export const TOLERANCE = 1e-6;

export interface Reference {
  readonly dir: string;
  readonly wallMs: number;
  readonly firstOutputMs: number;
}

export interface KillPointRecord {
  readonly index: number;
  readonly plan: KillPlan;
  /** False when the process finished before the planned moment. */
  readonly killed: boolean;
  readonly killedAtMs: number;
  /** Complete artefacts present right after the kill (what the kill interrupted). */
  readonly phase: string;
  readonly leftoversAfterKill: number;
  /** Crash-safety violations after the kill and after the continuation. */
  readonly problems: string[];
  readonly rerunStatus: number | null;
  readonly rerunMs: number;
  readonly leftoversAfterRerun: string[];
  /** Largest |Δ| against the reference over the scenario's tensors. */
  readonly maxDifference: number;
  readonly maxDifferenceAt: string;
  readonly metricsMatch: boolean;
}

/** Runs the scenario's command to completion in `dir`: the reference every kill point is compared with. */
export async function referenceRun(s: Scenario, base: string, dir: string): Promise<Reference> {
  const r = await runApex(s.args(base, dir), { cwd: base, home: join(base, 'hf-home') });
  if (r.status !== 0) throw new Error(`reference ${s.name} run failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const audit = await auditOutput(dir);
  if (audit.problems.length > 0 || audit.leftovers.length > 0) throw new Error(`reference ${s.name} run left problems: ${[...audit.problems, ...audit.leftovers].join('; ')}`);
  return { dir, wallMs: r.wallMs, firstOutputMs: r.firstOutputMs ?? 0 };
}

/** Seeded kill moments as fractions of the run: half counted from the start, half from the first output. */
export function killFractions(count: number, seed: number): { from: KillPlan['from']; fraction: number }[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, (_, i) => ({ from: i % 2 === 0 ? ('start' as const) : ('work' as const), fraction: rng.next() }));
}

/**
 * A fraction turned into a delay for a run expected to take `wallMs` (work starting at
 * `firstOutputMs`); 5% beyond the end so that finishing just before the kill is covered too.
 */
export function killPlan(k: { from: KillPlan['from']; fraction: number }, wallMs: number, firstOutputMs: number): KillPlan {
  const span = k.from === 'start' ? wallMs : Math.max(0, wallMs - firstOutputMs);
  return { from: k.from, delayMs: Math.round(k.fraction * span * 1.05) };
}

function phaseOf(complete: readonly string[], leftovers: readonly string[]): string {
  const kinds = new Map<string, number>();
  for (const c of complete) kinds.set(c.split(':')[0]!, (kinds.get(c.split(':')[0]!) ?? 0) + 1);
  const parts = [...kinds].map(([k, n]) => (n > 1 ? `${k}×${n}` : k));
  if (leftovers.some((l) => /\.tmp-/.test(l))) parts.push('temp');
  return parts.length > 0 ? parts.join('+') : leftovers.length > 0 ? 'lock only' : 'nothing';
}

export async function killPoint(s: Scenario, base: string, dir: string, index: number, plan: KillPlan, ref: Reference): Promise<KillPointRecord> {
  rmSync(dir, { recursive: true, force: true });
  const home = join(base, 'hf-home');
  const first = await runApex(s.args(base, dir), { cwd: base, home, kill: plan });
  const afterKill = await auditOutput(dir);
  const problems = afterKill.problems.map((p) => `after kill: ${p}`);
  if (!first.killed && first.status !== 0) problems.push(`the run finished on its own with exit ${first.status}: ${first.stderr.slice(-500)}`);

  const rerun = await runApex(s.rerunArgs(base, dir), { cwd: base, home });
  if (!s.rerunOk(rerun.status, rerun.stdout + rerun.stderr)) problems.push(`continuation exited ${rerun.status}: ${rerun.stderr.slice(-800)}`);
  const afterRerun = await auditOutput(dir);
  problems.push(...afterRerun.problems.map((p) => `after continuation: ${p}`));

  let maxDifference = 0;
  let maxDifferenceAt = '';
  for (const rel of s.tensors) {
    if (!existsSync(join(dir, rel))) {
      problems.push(`after continuation: ${rel} is missing`);
      maxDifference = Infinity;
      continue;
    }
    const d = await maxTensorDifference(join(dir, rel), join(ref.dir, rel));
    if (d.max > maxDifference || Number.isNaN(d.max)) {
      maxDifference = d.max;
      maxDifferenceAt = `${rel}: ${d.where}`;
    }
  }
  if (!(maxDifference <= TOLERANCE)) problems.push(`final tensors differ from the uninterrupted run by ${maxDifference} (${maxDifferenceAt})`);
  let metricsMatch = true;
  for (const rel of s.metrics) {
    const m = compareMetrics(join(dir, rel), join(ref.dir, rel));
    if (!m.sameSteps || !(m.maxRelative <= TOLERANCE)) {
      metricsMatch = false;
      problems.push(`${rel}: steps [${m.steps}], largest relative loss difference ${m.maxRelative}`);
    }
  }
  return {
    index,
    plan,
    killed: first.killed,
    killedAtMs: Math.round(first.wallMs),
    phase: phaseOf(afterKill.complete, afterKill.leftovers),
    leftoversAfterKill: afterKill.leftovers.length,
    problems,
    rerunStatus: rerun.status,
    rerunMs: Math.round(rerun.wallMs),
    leftoversAfterRerun: afterRerun.leftovers,
    maxDifference,
    maxDifferenceAt,
    metricsMatch,
  };
}
