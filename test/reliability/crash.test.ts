// Crash safety (issue 8), the npm-test handful of scripts/crash-harness.ts: `apex finetune` and
// `apex run` on micro configurations are SIGKILLed at fixed moments after they began work
// (expand's kill tests are in test/pipeline/expand-cli.test.ts); what is left must be nothing new or complete verified results (no model
// folder, stage record, trainer checkpoint or analysis that fails to open or to match its
// record), and `--resume` / a rerun must reach the uninterrupted run's final weights and loss
// sequence within 1e-6. The full 50-kills-per-command run and its figures: docs/reliability.md.
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { killPoint, referenceRun, type Reference } from '../../scripts/lib/crash-points.js';
import { scenarios, type ScenarioName } from '../../scripts/lib/crash-scenarios.js';
import { ensureBuilt, workspace } from './cli.js';

const SCENARIOS = scenarios({ quick: true });

/** Kill moments as fractions of the reference run's working time (after its first output). */
const POINTS: Partial<Record<ScenarioName, number[]>> = { finetune: [0.45], run: [0.6] };

beforeAll(() => ensureBuilt(['finetune', 'run']), 180_000);

for (const name of ['finetune', 'run'] as const) {
  describe(`SIGKILL during apex ${name}`, () => {
    const s = SCENARIOS[name];
    const ws = workspace(`crash-${name}`);
    let ref: Reference;

    beforeAll(async () => {
      await s.prepare(ws);
      ref = await referenceRun(s, ws, join(ws, 'reference'));
    }, 240_000);

    for (const [i, fraction] of POINTS[name]!.entries()) {
      it(`killed at ${Math.round(fraction * 100)}% of its work: nothing partial that looks complete; the continuation matches the uninterrupted run`, async () => {
        const plan = { from: 'work' as const, delayMs: Math.round(fraction * (ref.wallMs - ref.firstOutputMs)) };
        const r = await killPoint(s, ws, join(ws, `point-${i}`), i, plan, ref);
        expect(r.killed, 'the process finished before the kill').toBe(true);
        expect(r.problems).toEqual([]);
        expect(r.maxDifference).toBeLessThanOrEqual(1e-6);
        expect(r.metricsMatch).toBe(true);
        expect(r.leftoversAfterRerun).toEqual([]);
      }, 300_000);
    }
  });
}
