/**
 * Experiments 1 and 5: continued pre-training of the bundled model on the out-of-domain corpus,
 * APEX `full` against vanilla full training at the same budget (lib.ts BUDGET), ≥ 5 seeds.
 *
 * Metrics fixed before running: held-out perplexity at the end of the budget, and the fraction of
 * vanilla's tokens APEX needs to reach vanilla's final perplexity (from the eval curve, linear
 * interpolation; "not reached" when it does not within its budget). Then, per seed, the activation
 * CV and the effective rank of W and ΔW of the base, vanilla and APEX final models.
 *
 *   npx tsx bench/method/cpt.ts [--seeds 5] [--first-seed 0] [--no-diagnostics]
 */
import { join } from 'node:path';
import { APEX_FULL, BUDGET, RUNS_DIR, VANILLA, diagnose, environment, fmt, parseArgs, runArm, stats, tokensToReach, writeResult, REPO, type ArmResult, type ModelDiagnostics } from './lib.js';

const { seeds } = parseArgs(process.argv.slice(2));
const withDiagnostics = !process.argv.includes('--no-diagnostics');
const log = (m: string) => console.error(m);

const rows: { seed: number; vanilla: ArmResult; apex: ArmResult; tokensToVanillaFinal: number | null; fraction: number | null }[] = [];
const diagnostics: { seed: number; base: ModelDiagnostics; vanilla: ModelDiagnostics; apex: ModelDiagnostics }[] = [];
for (const seed of seeds) {
  log(`seed ${seed}`);
  const vanilla = await runArm(VANILLA, seed, log);
  const apex = await runArm(APEX_FULL, seed, log);
  const reach = tokensToReach(apex.curve, vanilla.final);
  rows.push({ seed, vanilla, apex, tokensToVanillaFinal: reach, fraction: reach === null ? null : reach / vanilla.totalTokens });
  log(`  seed ${seed}: vanilla ${vanilla.final.toFixed(3)}  apex ${apex.final.toFixed(3)}  tokens-to-reach ${reach === null ? 'not reached' : `${reach.toFixed(0)} (${((100 * reach) / vanilla.totalTokens).toFixed(0)}%)`}`);
  if (withDiagnostics) {
    const dir = join(RUNS_DIR, 'diagnostics', `seed-${seed}`);
    const baseModel = join(REPO, BUDGET.model);
    diagnostics.push({
      seed,
      base: await diagnose(baseModel, seed, join(dir, 'base')),
      vanilla: await diagnose(vanilla.finalModel, seed, join(dir, 'vanilla'), baseModel),
      apex: await diagnose(apex.finalModel, seed, join(dir, 'apex'), baseModel),
    });
  }
  await writeResult('cpt', { experiment: 'cpt', budget: BUDGET, environment: environment(), rows, diagnostics });
}

const fractions = rows.map((r) => r.fraction).filter((f): f is number => f !== null);
const lines = [
  `vanilla final ppl: ${fmt(stats(rows.map((r) => r.vanilla.final)))}`,
  `APEX full final ppl: ${fmt(stats(rows.map((r) => r.apex.final)))}`,
  `APEX − vanilla (per seed): ${fmt(stats(rows.map((r) => r.apex.final - r.vanilla.final)))}`,
  `fraction of vanilla tokens to reach vanilla final: ${fractions.length > 0 ? fmt(stats(fractions)) : '—'}; reached in ${fractions.length}/${rows.length} seeds`,
];
console.log(lines.join('\n'));
