/**
 * Experiment 3: APEX `structured` with the reference "52%" recipe (default tuned ratios 0.5625 /
 * 0.465, embeddings and lm_head trained) against vanilla full fine-tuning at the same budget.
 *
 *   npx tsx bench/method/structured.ts [--seeds 5] [--first-seed 0]
 */
import { compareWithVanilla, parseArgs, type Arm } from './lib.js';

export const STRUCTURED_52: Arm = { name: 'apex-structured-52', overrides: ['method=apex', 'setting=structured'] };

const { seeds } = parseArgs(process.argv.slice(2));
await compareWithVanilla('structured', [STRUCTURED_52], seeds);
