// Every method and setting end to end on models with biases, copies of stories260K
// (stage-settings.test.ts covers the bias-free LLaMA fixtures): Qwen2 (q/k/v biases) and LLaMA
// with attention_bias + mlp_bias (all seven). A short stage (wasm) lowers the held-out loss, its
// setting's invariants hold on the biases too (§3/§4: a bias follows its rows; o_proj/down_proj
// biases belong to no unit and stay as they are under `structured` and fusion; LoRA leaves
// biases alone), and the fused checkpoint `apex expand` writes computes the operator-augmented
// model: its output-side biases and logits match the operator hooks (src/ops/operator-hooks.ts,
// not fusion.ts) run on the base with trained.safetensors in place, and its held-out loss the
// trainer's last evaluation.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ProjectionKey } from '../../src/model/layer-hooks.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { readOperatorFile } from '../../src/ops/operator-file.js';
import { disposeOperatorVariables, operatorHooks, operatorVariables, type TrainableLayerOperators } from '../../src/ops/operator-hooks.js';
import { evaluateCheckpoint } from '../../src/pipeline/run-eval.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { checkpointLogits, maxAbs, maxAbsDiff } from '../model/helpers.js';
import { readAllF32, stageMetrics, storyChunks, tempRun, writeBiasedStories } from './stage-fixtures.js';

const { dir: root, cleanup } = tempRun('biased');
afterAll(cleanup);

interface BiasedModel {
  readonly dir: string;
  readonly spec: ModelSpec;
  readonly base: Map<string, Float32Array>;
}

async function openBiased(kind: 'qwen2' | 'llama-all'): Promise<BiasedModel> {
  const dir = join(root, kind);
  await writeBiasedStories(dir, 17, kind);
  const ck = await Checkpoint.open(dir);
  try {
    const base = new Map<string, Float32Array>();
    for (const name of ck.tensorNames()) base.set(name, await ck.readFloat32(name));
    return { dir, spec: describeCheckpoint(ck).spec, base };
  } finally {
    await ck.close();
  }
}

const BIAS = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.bias$/;
const biasNames = (m: BiasedModel) => [...m.base.keys()].filter((n) => BIAS.test(n));
/** Biases with a fusion rule (§3 output side). */
const OUTPUT_SIDE = new Set(['v_proj', 'gate_proj', 'up_proj']);

/** Indices where two arrays differ bit for bit (Object.is: −0 ≠ +0, NaN = NaN). */
function changed(a: Float32Array, b: Float32Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) out.push(i);
  return out;
}

/** The biased base with the stage's trained.safetensors in place (what fusion starts from, §5). */
async function writeUnfused(model: BiasedModel, out: string, trained: ReadonlyMap<string, { values: Float32Array }>): Promise<void> {
  const ck = await Checkpoint.open(model.dir);
  try {
    const tensors = ck.tensors().map((t) => {
      const values = trained.get(t.name)?.values ?? model.base.get(t.name)!;
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
function headRowSet(spec: ModelSpec, groups: Set<number>, query: boolean): Set<number> {
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

const MODELS = [
  { kind: 'qwen2', name: 'Qwen2, q/k/v biases', params: 260032 + 5 * (64 + 32 + 32) },
  { kind: 'llama-all', name: 'LLaMA attention_bias + mlp_bias, all seven biases', params: 260032 + 5 * (64 + 32 + 32 + 64 + 172 + 172 + 64) },
] as const;

const CASES = [
  { name: 'apex operators', options: { method: 'apex', setting: 'operators', lr: 3e-2 } },
  { name: 'apex structured', options: { method: 'apex', setting: 'structured', lr: 3e-3 } },
  { name: 'apex full', options: { method: 'apex', setting: 'full', lr: 3e-3 } },
  { name: 'vanilla', options: { method: 'vanilla', lr: 3e-3 } },
  { name: 'lora', options: { method: 'lora', loraRank: 4, lr: 1e-2 } },
] as const;

for (const M of MODELS) {
  describe(`every method and setting on a biased copy of stories260K: ${M.name} (wasm)`, () => {
    let model: BiasedModel;
    beforeAll(async () => {
      model = await openBiased(M.kind);
      expect(model.spec.qkvBias).toBe(true);
    });

    for (const c of CASES) {
      it(`${c.name}: held-out loss falls; the setting's rule holds on the biases; fused = operator-augmented`, async () => {
        const { spec, base } = model;
        const data = await storyChunks(32);
        const { dir: run, cleanup: done } = tempRun('biased-stage');
        runs.push(done);
        const result = await runStage({ model: model.dir, modelDir: model.dir, run, stage: 1, train: data, eval: data, steps: 6, batchSize: 4, backend: 'wasm', ...(c.options as Partial<StageOptions>) });
        const stageDir = join(run, 'stages', '1');
        const apex = c.options.method === 'apex';
        expect(biasNames(model).length).toBe((M.kind === 'qwen2' ? 3 : 7) * spec.numLayers);

        // Training: finite, falling held-out loss, as on the bias-free fixtures.
        const metrics = await stageMetrics(run);
        const evals = metrics.filter((l) => l.eval_loss !== undefined).map((l) => l.eval_loss!);
        expect(evals.every(Number.isFinite)).toBe(true);
        expect(evals[0]!).toBeGreaterThan(6);
        expect(evals.at(-1)!).toBeLessThan(evals[0]! - 1);
        expect(result.trainable.modelParams).toBe(M.params);
        expect(result.modelDir).toBe(join(stageDir, 'model'));
        expect(existsSync(join(stageDir, 'operators.safetensors'))).toBe(apex);
        expect(existsSync(join(stageDir, 'trained.safetensors'))).toBe(c.name !== 'apex operators');

        const trained = existsSync(join(stageDir, 'trained.safetensors')) ? await readAllF32(join(stageDir, 'trained.safetensors')) : new Map<string, { shape: number[]; values: Float32Array }>();
        const fusedTensors = await readAllF32(join(stageDir, 'model', 'model.safetensors'));
        expect([...fusedTensors.keys()].sort()).toEqual([...base.keys()].sort());
        const ops = apex ? (await readOperatorFile(join(stageDir, 'operators.safetensors'), spec)).layers : [];

        if (c.name === 'apex operators') {
          // No model tensor trains; fusion changes only the v/o/gate/up/down weights and the
          // output-side (v/gate/up) biases: everything else, o/down biases included, byte for byte.
          expect(result.trainable.direct).toBe(0);
          for (const [name, values] of base) {
            if (/\.(v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/.test(name) || OUTPUT_SIDE.has(BIAS.exec(name)?.[2] ?? '')) continue;
            expect(changed(values, fusedTensors.get(name)!.values), name).toEqual([]);
          }
        } else if (c.name === 'apex structured') {
          // Only the tuned rows (q/k/v/gate/up, weights and biases) and columns (o/down weights)
          // change; o/down biases belong to no unit and stay frozen (not in trained.safetensors).
          const heads = await tunedUnits(join(stageDir, 'operators.safetensors'), 'self_attn');
          const channels = await tunedUnits(join(stageDir, 'operators.safetensors'), 'mlp');
          let expectedDirect = spec.vocabSize * spec.hiddenSize; // tied embeddings, trained by default
          let biasEntriesChanged = 0;
          for (const [name, values] of base) {
            const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.(weight|bias)$/.exec(name);
            if (!m) continue;
            const layer = Number(m[1]);
            const proj = m[2] as ProjectionKey;
            const isBias = m[3] === 'bias';
            const g = heads.get(layer) ?? new Set<number>();
            const ch = channels.get(layer) ?? new Set<number>();
            const rowUnits = proj === 'q_proj' ? headRowSet(spec, g, true) : proj === 'k_proj' || proj === 'v_proj' ? headRowSet(spec, g, false) : proj === 'gate_proj' || proj === 'up_proj' ? ch : undefined;
            const colUnits = isBias ? undefined : proj === 'o_proj' ? headRowSet(spec, g, true) : proj === 'down_proj' ? ch : undefined;
            const t = trained.get(name);
            if (rowUnits === undefined && colUnits === undefined) {
              expect(t, `${name}: frozen, not in trained.safetensors`).toBeUndefined();
              continue;
            }
            expect(t, `${name} in trained.safetensors`).toBeDefined();
            const cols = isBias ? 1 : (t!.shape[1] as number);
            const rows = values.length / cols;
            expectedDirect += rowUnits ? rowUnits.size * cols : colUnits!.size * rows;
            const moved = changed(values, t!.values);
            const outside = moved.filter((i) => !(rowUnits?.has(Math.floor(i / cols)) ?? colUnits!.has(i % cols)));
            expect(outside.slice(0, 5), `${name}: entries changed outside the tuned units`).toEqual([]);
            if (isBias) biasEntriesChanged += moved.length;
          }
          expect(biasEntriesChanged).toBeGreaterThan(0);
          expect(result.trainable.direct).toBe(expectedDirect);
        } else if (c.name === 'apex full' || c.name === 'vanilla') {
          // Every tensor trains, biases included.
          expect(result.trainable.direct).toBe(M.params);
          for (const name of biasNames(model)) {
            expect(trained.has(name), `${name} in trained.safetensors`).toBe(true);
            expect(changed(base.get(name)!, trained.get(name)!.values).length, `${name} trained`).toBeGreaterThan(0);
          }
        } else {
          // LoRA adapts the seven projection weights; the biases are left as they are.
          expect(result.trainable.direct).toBe(0);
          expect(result.trainable.adapters).toBeGreaterThan(0);
          expect([...trained.keys()].filter((n) => !n.endsWith('_proj.weight'))).toEqual([]);
          expect(trained.size).toBe(7 * spec.numLayers);
          for (const name of biasNames(model)) expect(changed(base.get(name)!, fusedTensors.get(name)!.values), name).toEqual([]);
          // …and the PEFT adapter says so (PEFT would otherwise look for trained biases).
          expect(JSON.parse(await readFile(join(stageDir, 'adapter', 'adapter_config.json'), 'utf8')).bias).toBe('none');
        }

        // Biases without a fusion rule (q/k; o/down) are the trained (or base) ones in the fused model.
        for (const name of biasNames(model)) {
          if (OUTPUT_SIDE.has(BIAS.exec(name)![2]!)) continue;
          const expected = trained.get(name)?.values ?? base.get(name)!;
          expect(changed(expected, fusedTensors.get(name)!.values), `${name}: fused = trained`).toEqual([]);
        }

        // Fusion = the operator-augmented forward (hooks on the base with the trained tensors in place).
        const unfused = join(run, 'unfused');
        await writeUnfused(model, unfused, trained);
        const vars: TrainableLayerOperators[] = ops.map(operatorVariables);
        try {
          const hooksOf = new Map(vars.map((v) => [v.layer, operatorHooks(v, spec)]));
          // Output-side biases: fused = the hooks' rule on the unfused bias, moved on P ∪ N rows only.
          const unfusedF32 = await readAllF32(join(unfused, 'model.safetensors'));
          for (const name of biasNames(model)) {
            const [, layerText, projText] = BIAS.exec(name)!;
            const proj = projText as ProjectionKey;
            if (!OUTPUT_SIDE.has(proj)) continue;
            const layer = Number(layerText);
            const hooks = hooksOf.get(layer);
            const before = unfusedF32.get(name)!.values;
            const after = fusedTensors.get(name)!.values;
            const want = hooks?.transformBias ? tf.tidy(() => hooks.transformBias!(proj, tf.tensor1d(before)).dataSync() as Float32Array) : before;
            expect(maxAbsDiff(want, after), name).toBeLessThanOrEqual(1e-6);
            const layerOps = ops.find((o) => o.layer === layer);
            const op = proj === 'v_proj' ? layerOps?.attn : layerOps?.mlp;
            const units = new Set([...(op?.P ?? []), ...(op?.N ?? [])]);
            const mixed = proj === 'v_proj' ? headRowSet(spec, units, false) : units;
            const moved = changed(before, after);
            expect(moved.filter((r) => !mixed.has(r)), `${name}: rows outside P ∪ N moved`).toEqual([]);
            if (op) expect(moved.length, `${name}: the operator moved it`).toBeGreaterThan(0);
          }
          const sequences = data.sequences.slice(0, 2);
          const augmented = await checkpointLogits(unfused, sequences, apex ? (l) => hooksOf.get(l) : undefined);
          const fused = await checkpointLogits(join(stageDir, 'model'), sequences);
          const scale = maxAbs(augmented);
          expect(maxAbsDiff(fused, augmented)).toBeLessThanOrEqual(1e-4 * scale);
          if (apex) expect(maxAbsDiff(await checkpointLogits(unfused, sequences), augmented), 'the operators matter').toBeGreaterThan(1e-3 * scale);
        } finally {
          vars.forEach(disposeOperatorVariables);
        }

        // The fused checkpoint's held-out loss is the trainer's last evaluation of the augmented model.
        const fusedEval = await evaluateCheckpoint(join(stageDir, 'model'), data, { batchSize: 4 });
        expect(Math.abs(fusedEval.meanNll - evals.at(-1)!) / evals.at(-1)!).toBeLessThan(1e-4);
      });
    }
  });
}
