/**
 * Experiment 4: ablations of the unit selection and of the number of stages, on the `structured`
 * 52% recipe (where the selection decides which rows and columns train; under `full` every weight
 * trains and the selection only places the operators). Every arm has the same total tokens:
 * 1 × 36, 2 × 18 or 3 × 12 steps. The reference arm (rank scoring, 2 stages) is
 * `apex-structured-52`, shared with structured.ts.
 *
 *   npx tsx bench/method/ablations.ts [--seeds 5] [--first-seed 0] [--arms random,reverse,avg,stages-1,stages-3]
 */
import { compareWithVanilla, parseArgs, TOTAL_STEPS, type Arm } from './lib.js';

const S = ['method=apex', 'setting=structured'];
const ALL: Arm[] = [
  { name: 'apex-structured-52', overrides: S },
  { name: 'ablation-random', overrides: [...S, 'stages.random_selection=true'] },
  { name: 'ablation-reverse', overrides: [...S, 'stages.reverse=true'] },
  { name: 'ablation-avg', overrides: [...S, 'stages.score=avg'] },
  { name: 'ablation-stages-1', overrides: [...S, 'stages.count=1', `stages.steps=${TOTAL_STEPS}`] },
  { name: 'ablation-stages-3', overrides: [...S, 'stages.count=3', `stages.steps=${TOTAL_STEPS / 3}`] },
];

const { seeds } = parseArgs(process.argv.slice(2));
const i = process.argv.indexOf('--arms');
const wanted = i >= 0 ? process.argv[i + 1]!.split(',').map((a) => (a === 'reference' ? 'apex-structured-52' : `ablation-${a}`)) : null;
const arms = wanted ? ALL.filter((a) => a.name === 'apex-structured-52' || wanted.includes(a.name)) : ALL;
await compareWithVanilla('ablations', arms, seeds);
