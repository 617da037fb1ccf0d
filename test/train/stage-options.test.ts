// Stage settings: every contradictory combination is a UsageError naming the flags (before
// anything is read), the defaults are the reference recipe's, and budgets turn into steps.
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { parseTokenCount } from '../../src/train/stage-flags.js';
import { resolveStageSettings, stageSteps, type StageSettings } from '../../src/train/stage-options.js';
import { stageSeeds } from '../../src/train/stage-records.js';

const base: StageSettings = { model: 'm', run: 'r', stage: 1, steps: 10 };

describe('contradictions are UsageErrors that name the flags', () => {
  const cases: [string, Partial<StageSettings>, RegExp][] = [
    ['setting with vanilla', { method: 'vanilla', setting: 'full' }, /^--setting applies only to --method apex, not --method vanilla$/],
    ['selection flags with lora', { method: 'lora', ratio: 0.5, decayK: true, score: 'avg', randomSelection: true, reverse: true }, /^--ratio, --decay-k, --score, --random-selection, --reverse apply only to --method apex/],
    ['structured totals with vanilla', { method: 'vanilla', tunedAttnRatio: 0.5 }, /--tuned-attn-ratio applies only to --method apex/],
    ['structured totals with operators', { setting: 'operators', tunedFfnRatio: 0.3, trainEmbeddings: true }, /^--tuned-ffn-ratio, --train-embeddings apply only to --setting structured, not --setting operators$/],
    ['LoRA flags with apex', { loraRank: 4, loraAlpha: 8 }, /^--lora-rank, --lora-alpha apply only to --method lora, not --method apex$/],
    ['LoRA flags with vanilla', { method: 'vanilla', matchParams: 'runs/a' }, /--match-params applies only to --method lora/],
    ['rank and match-params', { method: 'lora', loraRank: 4, matchParams: 'runs/a' }, /either --lora-rank or --match-params/],
    ['two budgets', { tokens: 1000 }, /either --steps or --tokens/],
    ['no budget', { steps: undefined }, /--steps or --tokens/],
    ['resume and force', { resume: true, force: true }, /--resume and --force/],
    ['stage beyond the total', { stage: 3, totalStages: 2 }, /--total-stages 2 is less than --stage 3/],
    ['ratio out of range', { ratio: 0 }, /--ratio must be in \(0, 1\]/],
    ['negative learning rate', { lr: -1 }, /--lr must be a finite number > 0/],
    ['zero learning rate (trains nothing)', { lr: 0 }, /^--lr must be a finite number > 0, got 0$/],
    ['β2 = 1 (NaN from the first step)', { beta1: 0.9, beta2: 1 }, /^--betas \(β2\) must be in \[0, 1\), got 1$/],
    ['β1 = 1', { beta1: 1, beta2: 0.95 }, /^--betas \(β1\) must be in \[0, 1\), got 1$/],
    ['--no-train-embeddings with vanilla', { method: 'vanilla', trainEmbeddings: false }, /^--no-train-embeddings applies only to --method apex, not --method vanilla$/],
    ['--no-train-embeddings with full', { setting: 'full', trainEmbeddings: false }, /^--no-train-embeddings applies only to --setting structured, not --setting full$/],
    ['tuned ratio 0', { tunedAttnRatio: 0 }, /^--tuned-attn-ratio must be in \(0, 1\], got 0$/],
    ['negative clipping threshold', { gradClip: -1 }, /^--grad-clip must be a finite number >= 0, got -1$/],
    ['negative seed', { seed: -1 }, /^--seed must be an integer in \[0, 4294967295\], got -1$/],
    ['seed beyond 32 bits', { seed: 2 ** 32 }, /^--seed must be an integer in \[0, 4294967295\]/],
    ['fractional batch', { batchSize: 1.5 }, /--batch-size must be an integer >= 1/],
    ['unknown method', { method: 'dora' as never }, /--method must be one of apex, vanilla, lora/],
  ];
  for (const [name, patch, message] of cases) {
    it(name, () => {
      let error: unknown;
      try {
        resolveStageSettings({ ...base, ...patch });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UsageError);
      expect((error as Error).message).toMatch(message);
    });
  }
});

describe('accepted edges', () => {
  it('--grad-clip 0 (clipping off) and --weight-decay 0', () => {
    expect(resolveStageSettings({ ...base, gradClip: 0, weightDecay: 0 }).optimizer).toMatchObject({ gradClip: 0, weightDecay: 0 });
  });
});

describe('defaults', () => {
  it('APEX structured with the reference 52% totals, embeddings on, AdamW 0.9/0.95, no decay, lr 2e-5', () => {
    const s = resolveStageSettings(base);
    expect(s.method).toBe('apex');
    expect(s.setting).toBe('structured');
    expect(s.selection).toEqual({ ratio: 0.375, decayK: false, score: 'rank', randomSelection: false, reverse: false, tunedAttnRatio: 0.5625, tunedFfnRatio: 0.465, trainEmbeddings: true });
    expect(s.optimizer).toEqual({ lr: 2e-5, beta1: 0.9, beta2: 0.95, weightDecay: 0, gradClip: 1, batchSize: 8, gradAccum: 1 });
    expect(s.lora).toBeUndefined();
  });

  it('other settings and baselines carry no structured totals and no embedding training', () => {
    expect(resolveStageSettings({ ...base, setting: 'full' }).selection.trainEmbeddings).toBe(false);
    expect(resolveStageSettings({ ...base, setting: 'full' }).selection.tunedAttnRatio).toBeUndefined();
    const lora = resolveStageSettings({ ...base, method: 'lora', loraRank: 16 });
    expect(lora.setting).toBeUndefined();
    expect(lora.lora).toEqual({ rank: 16, alpha: undefined, matchParams: undefined });
  });
});

describe('budgets and seeds', () => {
  it('--tokens becomes steps of batch × accumulation × sequence length, rounded up', () => {
    expect(stageSteps({ steps: 7 }, 512)).toBe(7);
    expect(stageSteps({ tokens: 1024 }, 512)).toBe(2);
    expect(stageSteps({ tokens: 1025 }, 512)).toBe(3);
    expect(stageSteps({ tokens: 1 }, 512)).toBe(1);
  });

  it('token counts accept k, M and B', () => {
    expect(parseTokenCount('500000')).toBe(500000);
    expect(parseTokenCount('500k')).toBe(500000);
    expect(parseTokenCount('2.5M')).toBe(2500000);
    expect(parseTokenCount('3B')).toBe(3e9);
    expect(() => parseTokenCount('many')).toThrow(UsageError);
    expect(() => parseTokenCount('0')).toThrow(UsageError);
  });

  it('each stage has its own seeds, fixed by the run seed', () => {
    expect(stageSeeds(0, 2)).toEqual(stageSeeds(0, 2));
    expect(stageSeeds(0, 1)).not.toEqual(stageSeeds(0, 2));
    expect(stageSeeds(0, 1)).not.toEqual(stageSeeds(1, 1));
    const s = stageSeeds(5, 3);
    expect(new Set([s.operators, s.data, s.lora]).size).toBe(3);
  });
});
