// Every method and setting trains on the same trainer (wasm): the held-out loss falls, the
// stage folder holds the files §7 lists for it, and `structured` changes only the rows and
// columns of the selected units (plus the embeddings when asked), checked against the base
// checkpoint with unit→row maps written out here from §3/§4, not taken from the library.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { Rng } from '../../src/util/rng.js';
import { idSet, LLAMA, readAllF32, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const runs: (() => void)[] = [];
afterAll(() => runs.forEach((c) => c()));

async function stage(model: string, data: SequenceSet, options: Partial<StageOptions>) {
  const { dir, cleanup } = tempRun('settings');
  runs.push(cleanup);
  const result = await runStage({ model, modelDir: model, run: dir, stage: 1, train: data, eval: data, steps: 6, batchSize: 4, backend: 'wasm', expand: false, ...options });
  return { run: dir, stageDir: join(dir, 'stages', '1'), result, metrics: await stageMetrics(dir) };
}

/** Held-out (here: training-set) loss before the first and after the last step. */
function evalDrop(metrics: { eval_loss?: number; step: number }[]): { before: number; after: number } {
  const evals = metrics.filter((l) => l.eval_loss !== undefined);
  return { before: evals[0]!.eval_loss!, after: evals.at(-1)!.eval_loss! };
}

async function unitLists(path: string): Promise<Map<string, number[]>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, number[]>();
    for (const t of f.tensors) {
      if (t.dtype !== 'I32') continue;
      const b = await f.readBytes(t.name);
      out.set(t.name, Array.from(new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4)));
    }
    return out;
  } finally {
    await f.close();
  }
}

describe('every method and setting lowers the loss (stories260K, wasm)', () => {
  const cases = [
    { name: 'apex operators', options: { method: 'apex', setting: 'operators', lr: 3e-2 }, files: ['operators.safetensors', 'scores.safetensors'], absent: ['trained.safetensors'] },
    { name: 'apex structured', options: { method: 'apex', setting: 'structured', lr: 3e-3 }, files: ['operators.safetensors', 'trained.safetensors', 'scores.safetensors'], absent: [] },
    { name: 'apex full', options: { method: 'apex', setting: 'full', lr: 3e-3 }, files: ['operators.safetensors', 'trained.safetensors', 'scores.safetensors'], absent: [] },
    { name: 'vanilla', options: { method: 'vanilla', lr: 3e-3 }, files: ['trained.safetensors'], absent: ['operators.safetensors', 'scores.safetensors'] },
    { name: 'lora', options: { method: 'lora', loraRank: 4, lr: 1e-2 }, files: ['trained.safetensors'], absent: ['operators.safetensors', 'scores.safetensors'] },
  ] as const;

  for (const c of cases) {
    it(`${c.name}: held-out loss falls by at least 1 nat; files as §7 says`, async () => {
      const data = await storyChunks(32);
      const { stageDir, result, metrics } = await stage(STORIES, data, c.options as Partial<StageOptions>);
      const { before, after } = evalDrop(metrics);
      expect(before).toBeGreaterThan(6);
      expect(after).toBeLessThan(before - 1);
      expect(metrics.filter((l) => l.loss !== undefined).map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
      for (const f of [...c.files, 'metrics.jsonl', 'loss.svg', 'apex_run.json']) expect(existsSync(join(stageDir, f)), f).toBe(true);
      for (const f of c.absent) expect(existsSync(join(stageDir, f)), f).toBe(false);
      expect(result.trainable.trainable).toBeGreaterThan(0);
      expect(result.trainable.modelParams).toBe(260032);
    });
  }
});

describe('structured changes only the selected rows and columns', () => {
  const cases = [
    { name: 'stories260K (GQA, tied, embeddings trained)', model: STORIES, embeddings: true },
    { name: 'llama-mha-f32 (MHA, untied, embeddings frozen)', model: LLAMA, embeddings: false },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const checkpoint = await Checkpoint.open(c.model);
      const config = checkpoint.config as Record<string, number>;
      const H = config.num_attention_heads!;
      const nKv = config.num_key_value_heads ?? H;
      const dh = config.hidden_size! / H;
      let data: SequenceSet;
      if (c.model === STORIES) data = await storyChunks(32);
      else {
        const rng = new Rng(5);
        data = idSet(Array.from({ length: 8 }, () => Int32Array.from({ length: 32 }, () => rng.nextInt(config.vocab_size!))));
      }
      const { stageDir, result } = await stage(c.model, data, { method: 'apex', setting: 'structured', lr: 1e-2, tunedAttnRatio: 0.5, tunedFfnRatio: 0.3, trainEmbeddings: c.embeddings });
      const trained = await readAllF32(join(stageDir, 'trained.safetensors'));
      const units = await unitLists(join(stageDir, 'operators.safetensors'));
      const tuned = (layer: number, kind: 'self_attn' | 'mlp') =>
        new Set(['P', 'N', 'E'].flatMap((f) => units.get(`model.layers.${layer}.${kind}.apex.${f}`) ?? []));
      const rowsOf = (groups: Set<number>, query: boolean) => {
        const rows = new Set<number>();
        const perGroup = H / nKv;
        for (const g of groups) {
          const heads = query ? Array.from({ length: perGroup }, (_, j) => g * perGroup + j) : [g];
          for (const h of heads) for (let d = 0; d < dh; d++) rows.add(h * dh + d);
        }
        return rows;
      };
      let changedInside = 0;
      for (const name of checkpoint.tensorNames()) {
        const base = await checkpoint.readFloat32(name);
        const t = trained.get(name);
        const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$/.exec(name);
        if (t === undefined) {
          expect(m === null || name.includes('norm'), `${name} must be in trained.safetensors`).toBe(true);
          continue;
        }
        const [rows, cols] = t.shape as [number, number];
        expect(t.values.length).toBe(base.length);
        if (m === null) {
          // Embeddings / lm_head: whole tensors, present only when asked for.
          expect(c.embeddings, name).toBe(true);
          expect(t.values.some((v, i) => v !== base[i]), `${name} trained`).toBe(true);
          continue;
        }
        const layer = Number(m[1]);
        const proj = m[3]!;
        const heads = tuned(layer, 'self_attn');
        const channels = tuned(layer, 'mlp');
        const allowedRows = proj === 'q_proj' ? rowsOf(heads, true) : proj === 'k_proj' || proj === 'v_proj' ? rowsOf(heads, false) : proj === 'gate_proj' || proj === 'up_proj' ? channels : undefined;
        const allowedCols = proj === 'o_proj' ? rowsOf(heads, true) : proj === 'down_proj' ? channels : undefined;
        const outside: string[] = [];
        for (let r = 0; r < rows; r++) {
          for (let k = 0; k < cols; k++) {
            const i = r * cols + k;
            const inside = (allowedRows?.has(r) ?? false) || (allowedCols?.has(k) ?? false);
            if (!inside && !Object.is(t.values[i], base[i])) outside.push(`[${r}, ${k}]`);
            else if (inside && t.values[i] !== base[i]) changedInside++;
          }
        }
        expect(outside.slice(0, 5), `${name}: entries changed outside the selected units`).toEqual([]);
      }
      expect(changedInside).toBeGreaterThan(1000);
      expect(trained.has('model.norm.weight')).toBe(false);
      expect(result.trainable.direct).toBeLessThan(result.trainable.modelParams);
      await checkpoint.close();
    });
  }
});
