// Every method and setting end to end on a model with q/k/v biases (a Qwen2 copy of
// stories260K; stage-settings.test.ts covers the bias-free LLaMA fixtures): a short stage (wasm)
// lowers the held-out loss, its setting's invariants hold on the biases too (§3/§4: a bias
// follows its rows; LoRA leaves biases alone), and the fused checkpoint `apex expand` writes
// computes the operator-augmented model: its logits match the operator hooks
// (src/ops/operator-hooks.ts, not fusion.ts) run on the base with trained.safetensors in place,
// and its held-out loss the trainer's last evaluation.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { computeLogits } from '../../src/model/streaming-forward.js';
import { CheckpointWeightSource, describeCheckpoint } from '../../src/model/weight-source.js';
import { readOperatorFile } from '../../src/ops/operator-file.js';
import { disposeOperatorVariables, operatorHooks, operatorVariables, type TrainableLayerOperators } from '../../src/ops/operator-hooks.js';
import { evaluateCheckpoint } from '../../src/pipeline/run-eval.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { concatArrays } from '../../src/util/typed-arrays.js';
import { readAllF32, stageMetrics, storyChunks, tempRun, writeBiasedStories } from './stage-fixtures.js';

const { dir: root, cleanup } = tempRun('biased');
afterAll(cleanup);
const BIASED = join(root, 'qwen2-stories260K');
/** stories260K's 260032 plus 5 layers of q (64), k (32) and v (32) biases. */
const BIASED_PARAMS = 260032 + 5 * (64 + 32 + 32);

let base: Map<string, Float32Array>;
let spec: ModelSpec;
beforeAll(async () => {
  await writeBiasedStories(BIASED, 17);
  const ck = await Checkpoint.open(BIASED);
  try {
    spec = describeCheckpoint(ck).spec;
    expect(spec.qkvBias).toBe(true);
    base = new Map();
    for (const name of ck.tensorNames()) base.set(name, await ck.readFloat32(name));
  } finally {
    await ck.close();
  }
});

const BIAS = /^model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj)\.bias$/;
const biasNames = () => [...base.keys()].filter((n) => BIAS.test(n));

/** Indices where two arrays differ bit for bit (Object.is: −0 ≠ +0, NaN = NaN). */
function changed(a: Float32Array, b: Float32Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) out.push(i);
  return out;
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d;
  }
  return m;
}

async function logitsOf(dir: string, sequences: Int32Array[], hooks?: (layer: number) => ReturnType<typeof operatorHooks> | undefined): Promise<Float32Array> {
  const ck = await Checkpoint.open(dir);
  try {
    const parts = await computeLogits(new CheckpointWeightSource(ck, describeCheckpoint(ck).spec), sequences, hooks ? { hooks } : {});
    return concatArrays(parts, (n) => new Float32Array(n));
  } finally {
    await ck.close();
  }
}

/** The biased base with the stage's trained.safetensors in place (what fusion starts from, §5). */
async function writeUnfused(out: string, trained: ReadonlyMap<string, { values: Float32Array }>): Promise<void> {
  const ck = await Checkpoint.open(BIASED);
  try {
    const tensors = ck.tensors().map((t) => {
      const values = trained.get(t.name)?.values ?? base.get(t.name)!;
      return floatTensor(t.name, 'F32', [...t.shape], async () => values);
    });
    await writeCheckpoint({ outDir: out, tensors, layout: { kind: 'plan' }, files: { 'config.json': JSON.stringify(ck.config) }, hash: false });
  } finally {
    await ck.close();
  }
}

/** Tuned units (P ∪ N ∪ E) per layer, from operators.safetensors: KV groups (self_attn) or channels (mlp). */
async function tunedUnits(path: string, kind: 'self_attn' | 'mlp'): Promise<Map<number, Set<number>>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<number, Set<number>>();
    for (const t of f.tensors) {
      const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.apex\.(P|N|E)$/.exec(t.name);
      if (!m || m[2] !== kind) continue;
      const b = await f.readBytes(t.name);
      const set = out.get(Number(m[1])) ?? new Set<number>();
      for (const u of new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4)) set.add(u);
      out.set(Number(m[1]), set);
    }
    return out;
  } finally {
    await f.close();
  }
}

/** Rows of q (query heads of the groups, HF repeat_kv order) or of k/v (the groups' KV heads). */
function headRowSet(groups: Set<number>, query: boolean): Set<number> {
  const rows = new Set<number>();
  const perGroup = spec.numHeads / spec.numKvHeads;
  for (const g of groups) {
    const heads = query ? Array.from({ length: perGroup }, (_, j) => g * perGroup + j) : [g];
    for (const h of heads) for (let d = 0; d < spec.headDim; d++) rows.add(h * spec.headDim + d);
  }
  return rows;
}

const runs: (() => void)[] = [];
afterAll(() => runs.forEach((c) => c()));

describe('every method and setting on a model with q/k/v biases (Qwen2 copy of stories260K, wasm)', () => {
  const cases = [
    { name: 'apex operators', options: { method: 'apex', setting: 'operators', lr: 3e-2 } },
    { name: 'apex structured', options: { method: 'apex', setting: 'structured', lr: 3e-3 } },
    { name: 'apex full', options: { method: 'apex', setting: 'full', lr: 3e-3 } },
    { name: 'vanilla', options: { method: 'vanilla', lr: 3e-3 } },
    { name: 'lora', options: { method: 'lora', loraRank: 4, lr: 1e-2 } },
  ] as const;

  for (const c of cases) {
    it(`${c.name}: held-out loss falls; the setting's rule holds on the biases; fused = operator-augmented`, async () => {
      const data = await storyChunks(32);
      const { dir: run, cleanup: done } = tempRun('biased-stage');
      runs.push(done);
      const result = await runStage({ model: BIASED, modelDir: BIASED, run, stage: 1, train: data, eval: data, steps: 6, batchSize: 4, backend: 'wasm', ...(c.options as Partial<StageOptions>) });
      const stageDir = join(run, 'stages', '1');
      const apex = c.options.method === 'apex';

      // Training: finite, falling held-out loss, as on the bias-free fixtures.
      const metrics = await stageMetrics(run);
      const evals = metrics.filter((l) => l.eval_loss !== undefined).map((l) => l.eval_loss!);
      expect(evals.every(Number.isFinite)).toBe(true);
      expect(evals[0]!).toBeGreaterThan(6);
      expect(evals.at(-1)!).toBeLessThan(evals[0]! - 1);
      expect(result.trainable.modelParams).toBe(BIASED_PARAMS);
      expect(result.modelDir).toBe(join(stageDir, 'model'));
      expect(existsSync(join(stageDir, 'operators.safetensors'))).toBe(apex);
      expect(existsSync(join(stageDir, 'trained.safetensors'))).toBe(c.options.method !== 'apex' || c.options.setting !== 'operators');

      const trained = existsSync(join(stageDir, 'trained.safetensors')) ? await readAllF32(join(stageDir, 'trained.safetensors')) : new Map<string, { shape: number[]; values: Float32Array }>();
      const fusedTensors = await readAllF32(join(stageDir, 'model', 'model.safetensors'));
      expect([...fusedTensors.keys()].sort()).toEqual([...base.keys()].sort());
      const ops = apex ? (await readOperatorFile(join(stageDir, 'operators.safetensors'), spec)).layers : [];

      if (c.name === 'apex operators') {
        // No model tensor trains; fusion changes only v/o/gate/up/down (weights) and the v bias,
        // and the v bias only on its operator's rows P ∪ N.
        expect(result.trainable.direct).toBe(0);
        for (const [name, values] of base) {
          if (/\.(v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/.test(name) || name.endsWith('v_proj.bias')) continue;
          expect(changed(values, fusedTensors.get(name)!.values), name).toEqual([]);
        }
      } else if (c.name === 'apex structured') {
        // Only the tuned rows of q/k/v weights and of their biases change (and o columns, MLP
        // lines, embeddings): checked here for the attention tensors and the biases.
        const groups = await tunedUnits(join(stageDir, 'operators.safetensors'), 'self_attn');
        let expectedDirect = spec.vocabSize * spec.hiddenSize; // tied embeddings, trained by default
        for (const name of biasNames()) expect(trained.has(name), `${name} in trained.safetensors`).toBe(true);
        let biasRowsChanged = 0;
        for (const [name, t] of trained) {
          const m = /^model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)$/.exec(name);
          if (!m) continue;
          const rows = headRowSet(groups.get(Number(m[1])) ?? new Set(), m[2] === 'q_proj');
          const cols = m[3] === 'bias' ? 1 : spec.hiddenSize;
          expectedDirect += rows.size * cols;
          const outside = changed(base.get(name)!, t.values).filter((i) => !rows.has(Math.floor(i / cols)));
          expect(outside.slice(0, 5), `${name}: entries changed outside the tuned rows`).toEqual([]);
          if (m[3] === 'bias') biasRowsChanged += changed(base.get(name)!, t.values).length;
        }
        expect(biasRowsChanged).toBeGreaterThan(0);
        for (const g of groups.values()) expectedDirect += spec.hiddenSize * headRowSet(g, true).size; // o_proj columns
        // gate/up rows and down columns of the tuned channels.
        for (const units of (await tunedUnits(join(stageDir, 'operators.safetensors'), 'mlp')).values()) expectedDirect += 3 * spec.hiddenSize * units.size;
        expect(result.trainable.direct).toBe(expectedDirect);
      } else if (c.name === 'apex full' || c.name === 'vanilla') {
        // Every tensor trains, biases included.
        expect(result.trainable.direct).toBe(BIASED_PARAMS);
        for (const name of biasNames()) {
          expect(trained.has(name), `${name} in trained.safetensors`).toBe(true);
          expect(changed(base.get(name)!, trained.get(name)!.values).length, `${name} trained`).toBeGreaterThan(0);
        }
      } else {
        // LoRA adapts the seven projection weights; the biases are left as they are.
        expect(result.trainable.direct).toBe(0);
        expect(result.trainable.adapters).toBeGreaterThan(0);
        expect([...trained.keys()].filter((n) => !n.endsWith('_proj.weight'))).toEqual([]);
        expect(trained.size).toBe(7 * spec.numLayers);
        for (const name of biasNames()) expect(changed(base.get(name)!, fusedTensors.get(name)!.values), name).toEqual([]);
        // …and the PEFT adapter says so (PEFT would otherwise look for trained biases).
        expect(JSON.parse(await readFile(join(stageDir, 'adapter', 'adapter_config.json'), 'utf8')).bias).toBe('none');
      }

      // q/k biases are never mixed by fusion: the fused model holds the trained (or base) ones.
      for (const name of biasNames()) {
        if (name.endsWith('v_proj.bias')) continue;
        const expected = trained.get(name)?.values ?? base.get(name)!;
        expect(changed(expected, fusedTensors.get(name)!.values), `${name}: fused = trained`).toEqual([]);
      }

      // Fusion = the operator-augmented forward (hooks on the base with the trained tensors in place).
      const unfused = join(run, 'unfused');
      await writeUnfused(unfused, trained);
      const vars: TrainableLayerOperators[] = ops.map(operatorVariables);
      try {
        const hooksOf = new Map(vars.map((v) => [v.layer, operatorHooks(v, spec)]));
        // The v bias itself: fused = the hooks' output-side rule applied to the unfused bias.
        const unfusedF32 = await readAllF32(join(unfused, 'model.safetensors'));
        for (let l = 0; l < spec.numLayers; l++) {
          const name = `model.layers.${l}.self_attn.v_proj.bias`;
          const hooks = hooksOf.get(l);
          const before = unfusedF32.get(name)!.values;
          const want = hooks?.transformBias ? tf.tidy(() => hooks.transformBias!('v_proj', tf.tensor1d(before)).dataSync() as Float32Array) : before;
          expect(maxAbsDiff(want, fusedTensors.get(name)!.values), name).toBeLessThanOrEqual(1e-6);
          const attn = ops.find((o) => o.layer === l)?.attn;
          const mixed = headRowSet(new Set([...(attn?.P ?? []), ...(attn?.N ?? [])]), false);
          const moved = changed(before, fusedTensors.get(name)!.values);
          expect(moved.filter((r) => !mixed.has(r)), `${name}: rows outside P ∪ N moved`).toEqual([]);
          if (attn) expect(moved.length, `${name}: the operator moved it`).toBeGreaterThan(0);
        }
        const sequences = data.sequences.slice(0, 2);
        const augmented = await logitsOf(unfused, sequences, apex ? (l) => hooksOf.get(l) : undefined);
        const fused = await logitsOf(join(stageDir, 'model'), sequences);
        const scale = maxAbs(augmented);
        expect(maxAbsDiff(fused, augmented)).toBeLessThanOrEqual(1e-4 * scale);
        if (apex) expect(maxAbsDiff(await logitsOf(unfused, sequences), augmented), 'the operators matter').toBeGreaterThan(1e-3 * scale);
      } finally {
        vars.forEach(disposeOperatorVariables);
      }

      // The fused checkpoint's held-out loss is the trainer's last evaluation of the augmented model.
      const fusedEval = await evaluateCheckpoint(join(stageDir, 'model'), data, { batchSize: 4 });
      expect(Math.abs(fusedEval.meanNll - evals.at(-1)!) / evals.at(-1)!).toBeLessThan(1e-4);
    });
  }
});
