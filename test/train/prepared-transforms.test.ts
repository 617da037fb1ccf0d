// With gradient accumulation the trainer computes the hooks' transforms once per step and
// differentiates through them once (prepared-transforms.ts), and once per held-out evaluation.
// That must be the same training as transforming and differentiating per micro-batch: same
// losses, evaluations and gradient norms step by step, same trained tensors, operators and
// scores, up to float rounding — for APEX (full and structured) and LoRA, whose hooks are the
// transforms; APEX structured also on a Qwen2 copy with q/k/v biases, whose v bias the hooks
// transform (a prepared bias) and whose bias rows train under a mask.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun, writeBiasedStories } from './stage-fixtures.js';

const biased = tempRun('prepared-qwen2');
const cleanups: (() => void)[] = [biased.cleanup];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;
let held: SequenceSet;

beforeAll(async () => {
  await writeBiasedStories(biased.dir, 17);
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 12));
  held = idSet(chunks.slice(12, 16));
});

const scenarios = [
  { name: 'APEX full', options: { method: 'apex', setting: 'full' }, files: ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'] },
  { name: 'APEX full on wasm', options: { method: 'apex', setting: 'full', backend: 'wasm' }, files: ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'] },
  { name: 'APEX structured', options: { method: 'apex', setting: 'structured' }, files: ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'] },
  { name: 'LoRA', options: { method: 'lora', loraRank: 2 }, files: ['trained.safetensors'] },
  { name: 'APEX structured on wasm, Qwen2 with q/k/v biases', options: { method: 'apex', setting: 'structured', backend: 'wasm', model: biased.dir, modelDir: biased.dir }, files: ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'] },
] as const;

async function run(extra: Partial<StageOptions>): Promise<string> {
  const { dir, cleanup } = tempRun('prepared');
  cleanups.push(cleanup);
  await runStage({
    model: STORIES, modelDir: STORIES, run: dir, stage: 1, train: data, eval: held, steps: 3, batchSize: 2, gradAccum: 3, lr: 1e-3,
    saveEvery: 0, evalEvery: 1, expand: false, backend: 'cpu', ...extra,
  } as StageOptions);
  return dir;
}

describe('transforms prepared once per step (3 micro-batches per step; cpu unless said)', () => {
  for (const sc of scenarios) {
    it(`${sc.name}: the same training as transforming per micro-batch`, async () => {
      const prepared = await run({ ...(sc.options as Partial<StageOptions>) });
      const perBatch = await run({ ...(sc.options as Partial<StageOptions>), prepareTransforms: false });
      const all = await stageMetrics(prepared);
      const allPerBatch = await stageMetrics(perBatch);
      // Held-out evaluation (2 batches) before any step: the same weights, the same bits.
      expect(all[0]!.step).toBe(0);
      expect(all[0]!.eval_loss).toBe(allPerBatch[0]!.eval_loss);
      all.forEach((l, i) => expect(Math.abs(l.eval_loss! - allPerBatch[i]!.eval_loss!), `eval loss at step ${l.step}`).toBeLessThan(1e-5 * l.eval_loss!));
      const a = all.filter((l) => l.loss !== undefined);
      const b = allPerBatch.filter((l) => l.loss !== undefined);
      expect(a.map((l) => l.step)).toEqual([1, 2, 3]);
      a.forEach((l, i) => {
        expect(Math.abs(l.loss! - b[i]!.loss!), `loss at step ${l.step}`).toBeLessThan(1e-5 * Math.abs(b[i]!.loss!));
        expect(Math.abs(l.grad_norm! - b[i]!.grad_norm!), `gradient norm at step ${l.step}`).toBeLessThan(1e-4 * b[i]!.grad_norm!);
      });
      for (const file of sc.files) expect(await stageFileMaxAbsDiff(prepared, perBatch, file), file).toBeLessThan(1e-5);
    });
  }
});
