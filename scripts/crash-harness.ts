/**
 * Crash-safety harness (issue 8): starts `apex expand`, `apex finetune` and `apex run` on micro
 * configurations as child processes, kills each with SIGKILL at seeded random moments, and
 * checks that the output then holds nothing new or complete verified results, that the
 * continuation (`--resume` / a rerun) succeeds, and that it ends with the same final weights
 * and loss sequence as an uninterrupted run (within 1e-6). Needs `npm run build`; the built
 * tree is copied first, so rebuilds during the run do not mix two versions of apex.
 *
 *     npx tsx scripts/crash-harness.ts --kills 50 --seed 1 [--commands expand,finetune,run] [--json out.json]
 */
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { killFractions, killPlan, killPoint, referenceRun, type KillPointRecord } from './lib/crash-points.js';
import { ROOT, useApexRoot } from './lib/crash-process.js';
import { scenarios, type ScenarioName } from './lib/crash-scenarios.js';

const { values } = parseArgs({
  options: {
    kills: { type: 'string', default: '50' },
    seed: { type: 'string', default: '1' },
    commands: { type: 'string', default: 'expand,finetune,run' },
    json: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
});
const kills = Number(values.kills);
const seed = Number(values.seed);
const SCENARIOS = scenarios();
const names = values.commands!.split(',') as ScenarioName[];
for (const n of names) if (!SCENARIOS[n]) throw new Error(`unknown command '${n}' (expand, finetune, run)`);

const work = mkdtempSync(join(tmpdir(), 'apex-crash-'));
const snapshot = join(work, 'apex');
for (const p of ['bin', 'dist', 'package.json']) cpSync(join(ROOT, p), join(snapshot, p), { recursive: true });
for (const p of ['node_modules', 'fixtures']) symlinkSync(join(ROOT, p), join(snapshot, p));
useApexRoot(snapshot);
const report: Record<string, unknown> = { kills, seed, startedAt: new Date().toISOString(), commands: {} };
let failures = 0;

for (const name of names) {
  const s = SCENARIOS[name];
  const base = join(work, name);
  const t0 = performance.now();
  await s.prepare(base);
  const ref = await referenceRun(s, base, join(base, 'reference'));
  process.stderr.write(`${name}: uninterrupted run ${(ref.wallMs / 1000).toFixed(1)} s (work from ${(ref.firstOutputMs / 1000).toFixed(1)} s)\n`);
  const records: KillPointRecord[] = [];
  // Kill moments are fractions of the expected duration, which starts as the reference's and
  // shrinks to the fastest run that finished before its kill (machine load varies a lot).
  let expectedMs = ref.wallMs;
  for (const [i, k] of killFractions(kills, seed * 1000 + names.indexOf(name)).entries()) {
    const plan = killPlan(k, expectedMs, ref.firstOutputMs);
    const r = await killPoint(s, base, join(base, 'point'), i, plan, ref);
    if (!r.killed) expectedMs = Math.min(expectedMs, r.killedAtMs);
    records.push(r);
    failures += r.problems.length > 0 ? 1 : 0;
    process.stderr.write(
      `${name} #${String(i).padStart(2)} ${plan.from} +${plan.delayMs} ms: ${r.killed ? `killed at ${r.killedAtMs} ms` : 'finished first'}, left [${r.phase}] ` +
        `→ continuation exit ${r.rerunStatus} in ${(r.rerunMs / 1000).toFixed(1)} s, max |Δ| ${r.maxDifference}` +
        `${r.leftoversAfterRerun.length ? `, leftovers ${r.leftoversAfterRerun.join(' ')}` : ''}${r.problems.length ? `\n    PROBLEMS: ${r.problems.join('\n    ')}` : ''}\n`,
    );
  }
  const phases = new Map<string, number>();
  for (const r of records) phases.set(r.killed ? r.phase : 'finished before the kill', (phases.get(r.killed ? r.phase : 'finished before the kill') ?? 0) + 1);
  const summary = {
    referenceSeconds: ref.wallMs / 1000,
    killPoints: records.length,
    killed: records.filter((r) => r.killed).length,
    violations: records.filter((r) => r.problems.length > 0).length,
    continuationsOk: records.filter((r) => !r.problems.some((p) => p.startsWith('continuation'))).length,
    maxDifference: Math.max(...records.map((r) => r.maxDifference)),
    metricsMatch: records.filter((r) => r.metricsMatch).length,
    leftoversAfterContinuation: records.filter((r) => r.leftoversAfterRerun.length > 0).length,
    phases: Object.fromEntries([...phases].sort((a, b) => b[1] - a[1])),
    seconds: (performance.now() - t0) / 1000,
    records,
  };
  (report.commands as Record<string, unknown>)[name] = summary;
  const { records: _r, ...brief } = summary;
  process.stdout.write(`${name}: ${JSON.stringify(brief)}\n`);
}

report.finishedAt = new Date().toISOString();
if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
if (!values.keep) rmSync(work, { recursive: true, force: true });
process.stdout.write(failures === 0 ? 'crash harness: no violations\n' : `crash harness: ${failures} kill point(s) with violations\n`);
process.exitCode = failures === 0 ? 0 : 1;
