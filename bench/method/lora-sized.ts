/**
 * Experiment 2: the LoRA-sized setting. APEX `structured` with the smallest tuned ratios the
 * selection allows (0.375 = P ∪ N only, no embeddings), LoRA on all seven projections with the
 * rank whose trainable count is closest (lora.match_params → that APEX run), and APEX
 * `operators` alone; each against vanilla at the same budget.
 *
 *   npx tsx bench/method/lora-sized.ts [--seeds 5] [--first-seed 0]
 */
import { compareWithVanilla, parseArgs, runFolder, type Arm } from './lib.js';

const SMALL: Arm = {
  name: 'apex-structured-small',
  overrides: ['method=apex', 'setting=structured', 'structured.tuned_attn_ratio=0.375', 'structured.tuned_ffn_ratio=0.375', 'structured.train_embeddings=false'],
};
const OPERATORS: Arm = { name: 'apex-operators', overrides: ['method=apex', 'setting=operators'] };

const { seeds } = parseArgs(process.argv.slice(2));
// LoRA's rank is matched to the same seed's APEX run, so the APEX arm runs first.
const loraMatched = (seed: number): Arm => ({ name: 'lora-matched', overrides: ['method=lora', `lora.match_params=${runFolder(SMALL.name, seed)}`] });
await compareWithVanilla('lora-sized', (seed) => [SMALL, loraMatched(seed), OPERATORS], seeds);
