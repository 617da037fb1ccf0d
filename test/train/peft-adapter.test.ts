// A LoRA stage writes its trained factors as a PEFT adapter (adapter/): PEFT's tensor names and
// shapes, an adapter_config.json with the stage's rank and alpha, and factors that rebuild the
// merged weights of trained.safetensors (W + α/r · B·A, recomputed here in float64).
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { adapterBase, peftAdapterConfig, peftTensorName, renderAdapterCard } from '../../src/train/peft-adapter.js';
import { runStage } from '../../src/train/stage.js';
import { readAllF32, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const { dir: root, cleanup } = tempRun('peft-adapter');
afterAll(cleanup);

const PROJECTIONS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

it('a LoRA stage writes adapter/ in PEFT layout whose factors rebuild its merged weights', async () => {
  const run = join(root, 'lora');
  // A rank and alpha other than the default 2·rank, so the scale α/r (5/3) is the one given.
  await runStage({ model: STORIES, modelDir: STORIES, run, stage: 1, method: 'lora', loraRank: 3, loraAlpha: 5, train: await storyChunks(32), steps: 3, batchSize: 4, lr: 1e-2, backend: 'cpu', expand: false });
  const stage = join(run, 'stages', '1');
  const config = JSON.parse(readFileSync(join(stage, 'adapter', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 3, lora_alpha: 5, lora_dropout: 0, bias: 'none', base_model_name_or_path: resolve(STORIES), revision: null });
  expect(config.target_modules).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  // The model card PEFT's save_pretrained also writes: library_name peft; no Hub base_model for a local folder.
  const card = readFileSync(join(stage, 'adapter', 'README.md'), 'utf8');
  expect(card).toMatch(/^---\nlibrary_name: peft\n/);
  expect(card).toContain(`| base model | \`${resolve(STORIES)}\` |`);
  expect(card).toContain('| scale (alpha / r) | 1.6666666666666667 |');

  const factors = await readAllF32(join(stage, 'adapter', 'adapter_model.safetensors'));
  const base = await readAllF32(join(STORIES, 'model.safetensors'));
  const merged = await readAllF32(join(stage, 'trained.safetensors'));
  const expectedNames = Array.from({ length: 5 }, (_, i) => PROJECTIONS.flatMap((p) => ['A', 'B'].map((f) => `base_model.model.model.layers.${i}.${p}.lora_${f}.weight`))).flat();
  expect([...factors.keys()].sort()).toEqual(expectedNames.sort());
  let worst = 0;
  let moved = 0;
  for (let i = 0; i < 5; i++) {
    for (const p of PROJECTIONS) {
      const name = `model.layers.${i}.${p}.weight`;
      const A = factors.get(peftTensorName(name, 'A'))!;
      const B = factors.get(peftTensorName(name, 'B'))!;
      const W = base.get(name)!;
      const [out, inner] = W.shape as [number, number];
      expect([A.shape, B.shape]).toEqual([[3, inner], [out, 3]]);
      const trained = merged.get(name)!.values;
      for (let r = 0; r < out; r++) {
        for (let c = 0; c < inner; c++) {
          let ba = 0;
          for (let k = 0; k < 3; k++) ba += B.values[r * 3 + k]! * A.values[k * inner + c]!;
          const want = W.values[r * inner + c]! + (5 / 3) * ba;
          worst = Math.max(worst, Math.abs(want - trained[r * inner + c]!));
          if (ba !== 0) moved++;
        }
      }
    }
  }
  expect(moved).toBeGreaterThan(0);
  expect(worst).toBeLessThan(1e-6);
});

it('names the base a Hub repo and revision for a Hub model, and the previous fused model after stage 1', () => {
  // With the resolution: the commit trained from (a branch can move on), else the revision named, else none.
  const commit = '0123456789abcdef0123456789abcdef01234567';
  expect(adapterBase(1, 'org/model', `/cache/snapshots/${commit}`, { source: 'cache', repo: 'org/model', revision: 'main', commit })).toEqual({ repo: 'org/model', revision: commit });
  expect(adapterBase(1, 'org/model@v2', '/cache/snapshots/x', { source: 'hub', repo: 'org/model', revision: 'v2' })).toEqual({ repo: 'org/model', revision: 'v2' });
  expect(adapterBase(1, 'org/model', '/cache/snapshots/x', { source: 'cache', repo: 'org/model' })).toEqual({ repo: 'org/model', revision: null });
  // A local folder named as the resolver read it (`~/m` does not exist as written): the folder.
  expect(adapterBase(1, '~/m', '/home/u/m', { source: 'local' })).toEqual({ folder: '/home/u/m' });
  expect(peftAdapterConfig({ rank: 8, alpha: 16, targetModules: ['q_proj'], base: { repo: 'org/model', revision: null }, tensors: new Map() })).toMatchObject({ base_model_name_or_path: 'org/model', revision: null });
  // A Hub base's card carries base_model (the Hub links the adapter to it) and loads at the commit.
  const hubCard = renderAdapterCard({ rank: 8, alpha: 16, targetModules: ['q_proj'], base: { repo: 'org/model', revision: commit }, tensors: new Map() }, 1);
  expect(hubCard).toMatch(/^---\nbase_model: "org\/model"\nlibrary_name: peft\n/);
  expect(hubCard).toContain(`from_pretrained("org/model", revision="${commit}")`);
  // Without it (a library caller), the model argument is read as before.
  expect(adapterBase(1, 'org/model@v2', '/cache/snapshots/abc')).toEqual({ repo: 'org/model', revision: 'v2' });
  expect(adapterBase(1, 'org/model', '/cache/snapshots/abc')).toEqual({ repo: 'org/model', revision: 'main' });
  expect(adapterBase(1, STORIES, resolve(STORIES))).toEqual({ folder: resolve(STORIES) });
  expect(adapterBase(2, 'org/model', '/runs/x/stages/1/model')).toEqual({ folder: '/runs/x/stages/1/model' });
  expect(peftAdapterConfig({ rank: 8, alpha: 16, targetModules: ['q_proj'], base: { repo: 'org/model', revision: 'main' }, tensors: new Map() })).toMatchObject({ base_model_name_or_path: 'org/model', revision: 'main' });
});
