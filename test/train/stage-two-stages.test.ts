// Two APEX stages end to end (wasm): analyze → finetune 1 → expand 1 → finetune 2 → expand 2,
// with decaying K. Every fused checkpoint loads and is evaluated the way `apex eval` / `apex
// run` do it (streaming forward), and its held-out loss equals the loss the trainer measured
// on the operator-augmented model at the end of the stage: the fused checkpoint computes the
// function that was trained. Stage 2 reads stage 1's model and scores, leaves out stage 1's N
// units, and continues stage 1's learning-rate plan.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { evaluateCheckpoint } from '../../src/pipeline/run-eval.js';
import { learningRate, planForStages } from '../../src/train/lr-schedule.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { idSet, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir: run, cleanup } = tempRun('two-stages');
afterAll(cleanup);

async function negatives(stage: number): Promise<Map<string, Set<number>>> {
  const f = await SafetensorsFile.open(join(run, 'stages', String(stage), 'operators.safetensors'));
  const out = new Map<string, Set<number>>();
  for (const t of f.tensors) {
    const m = /^(model\.layers\.\d+\.\w+)\.apex\.(P|N)$/.exec(t.name);
    if (!m) continue;
    const b = await f.readBytes(t.name);
    const set = out.get(`${m[1]}.${m[2]}`) ?? new Set<number>();
    for (const u of new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4)) set.add(u);
    out.set(`${m[1]}.${m[2]}`, set);
  }
  await f.close();
  return out;
}

it('analyze → finetune 1 → expand 1 → finetune 2 → expand 2: loadable checkpoints, perplexity at every stage', async () => {
  const chunks = (await storyChunks(32)).sequences;
  const train = idSet(chunks.slice(0, 6));
  const held = idSet(chunks.slice(6));
  const common: Omit<StageOptions, 'stage'> = {
    model: STORIES, modelDir: STORIES, run, totalStages: 2, method: 'apex', setting: 'full', decayK: true,
    train, eval: held, steps: 3, batchSize: 2, lr: 2e-3, backend: 'wasm',
  };
  const perplexities: number[] = [(await evaluateCheckpoint(STORIES, held, { batchSize: 4 })).perplexity];
  for (const stage of [1, 2]) {
    const result = await runStage({ ...common, stage });
    expect(result.modelDir).toBe(join(run, 'stages', String(stage), 'model'));
    expect(existsSync(join(result.modelDir!, 'model.safetensors'))).toBe(true);
    const fused = await evaluateCheckpoint(result.modelDir!, held, { batchSize: 4 });
    const trained = (await stageMetrics(run, stage)).at(-1)!.eval_loss!;
    expect(Math.abs(fused.meanNll - trained) / trained, `stage ${stage}: fused vs augmented held-out loss`).toBeLessThan(1e-4);
    perplexities.push(fused.perplexity);
  }
  expect(existsSync(join(run, 'analysis', 'stats.safetensors'))).toBe(true);
  expect(perplexities.every((p) => Number.isFinite(p) && p > 1)).toBe(true);
  expect(perplexities[2]!).toBeLessThan(perplexities[0]!);

  // Decaying K: stage 2's P and N avoid the units stage 1 used as N.
  const first = await negatives(1);
  const second = await negatives(2);
  for (const [key, n1] of first) {
    if (!key.endsWith('.N')) continue;
    const layer = key.slice(0, -2);
    for (const u of [...(second.get(`${layer}.P`) ?? []), ...(second.get(`${layer}.N`) ?? [])]) expect(n1.has(u), `${layer}: unit ${u} was N in stage 1`).toBe(false);
  }
  const channelsN2 = second.get('model.layers.0.mlp.N')!;
  expect(channelsN2.size).toBe(16); // floor(172 · 0.375 / 2²)

  // One learning-rate plan over both stages: stage 2's steps are global steps 3, 4, 5.
  const plan = planForStages(2e-3, [3, 3]);
  expect((await stageMetrics(run, 2)).filter((l) => l.lr !== undefined).map((l) => l.lr)).toEqual([3, 4, 5].map((s) => learningRate(s, plan)));
});
