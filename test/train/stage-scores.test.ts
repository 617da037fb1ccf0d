// The stage's scores.safetensors is the sum of the Top-k/Min-k counts of its training
// micro-batches, read from the operator-augmented forward. Recomputed independently for a
// 3-step `operators` stage whose every micro-batch is the two reference stories:
//   step 1 runs the fresh (identity) operators, so its activations are the base model's —
//   taken from PyTorch's float64 head_sumsq / gate_act_sumsq in the reference file (a run of
//   3 steps has no warm-up, ⌊0.03 · 3⌋ = 0, so step 1 already moves the operators);
//   steps 2 and 3 run the operators after steps 1 and 2, read from those checkpoints, fused
//   into the weights with the fusion code (not the hooks the trainer used), then a plain forward.
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { layerTensors } from '../../src/model/architecture.js';
import { forwardLogits, modelWeightsFromArrays } from '../../src/model/model-weights.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { fuseLayerTensor } from '../../src/ops/fusion.js';
import type { LayerOperators } from '../../src/ops/operator-init.js';
import { runStage } from '../../src/train/stage.js';
import { idSet, readAllF32, STORIES, storiesReference, tempRun } from './stage-fixtures.js';

const { dir: run, cleanup } = tempRun('scores');
afterAll(cleanup);

/** Counts of one micro-batch from unit norms: +1 Top-k, −1 Min-k, ties by lower index. */
function counts(norms: number[], k: number): number[] {
  const order = norms.map((v, i) => [v, i] as const);
  const desc = [...order].sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map((x) => x[1]);
  const asc = [...order].sort((a, b) => a[0] - b[0] || a[1] - b[1]).slice(0, k).map((x) => x[1]);
  const out = new Array<number>(norms.length).fill(0);
  for (const i of desc) out[i]! += 1;
  for (const i of asc) out[i]! -= 1;
  return out;
}

/** KV-group norms from per-query-head sums of squares (heads g·H/nKv … of group g). */
function groupNorms(headSumsq: number[], nKv: number): number[] {
  const per = headSumsq.length / nKv;
  return Array.from({ length: nKv }, (_, g) => Math.sqrt(headSumsq.slice(g * per, (g + 1) * per).reduce((a, b) => a + b, 0)));
}

it('scores.safetensors = Σ over micro-batches of the rank counts (3 steps, operators, stories260K)', async () => {
  const ref = await storiesReference();
  const result = await runStage({
    model: STORIES, modelDir: STORIES, run, stage: 1, method: 'apex', setting: 'operators', train: idSet(ref.sequences),
    steps: 3, batchSize: 2, lr: 5e-2, saveEvery: 1, keepCheckpoints: 3, backend: 'wasm', expand: false,
  });
  expect(result.steps).toBe(3);
  const checkpoint = await Checkpoint.open(STORIES);
  const { spec } = describeCheckpoint(checkpoint);
  const { numLayers: L, numHeads: H, numKvHeads: nKv, intermediateSize: I } = spec;
  const B = ref.sequences.length;
  // k of the counts: floor(n · 0.375 / 2), at least 1 → 1 of 4 KV groups, 32 of 172 channels.
  const headK = 1;
  const channelK = 32;

  // Base activations (PyTorch, float64): the micro-batch's sums of squares are the sums over its sequences.
  const baseHead: number[][] = [];
  const baseChannel: number[][] = [];
  for (let l = 0; l < L; l++) {
    baseHead.push(Array.from({ length: H }, (_, h) => Array.from({ length: B }, (_, b) => ref.headSumsq[(l * B + b) * H + h]!).reduce((a, c) => a + c, 0)));
    baseChannel.push(Array.from({ length: I }, (_, c) => Array.from({ length: B }, (_, b) => ref.gateSumsq[(l * B + b) * I + c]!).reduce((a, x) => a + x, 0)));
  }

  // The model a step ran: the base weights fused with the operators of the previous step's checkpoint.
  const units = await SafetensorsFile.open(join(run, 'stages/1/operators.safetensors'));
  const ints = async (name: string) => {
    const b = await units.readBytes(name);
    return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
  };
  const ids = tf.tensor2d(ref.sequences.flatMap((s) => Array.from(s)), [B, ref.sequences[0]!.length], 'int32');
  async function normsAfter(checkpointStep: number): Promise<{ head: number[][]; channel: number[][]; moved: number }> {
    const params = await readAllF32(join(run, `stages/1/checkpoints/step-0000000${checkpointStep}/tensors.safetensors`));
    const weights = new Map<string, Float32Array>();
    for (const name of checkpoint.tensorNames()) weights.set(name, await checkpoint.readFloat32(name));
    let moved = 0;
    for (let l = 0; l < L; l++) {
      const p = (kind: string, f: string) => params.get(`param.model.layers.${l}.${kind}.apex.${f}`)!;
      const B1a = p('self_attn', 'B1');
      const B1m = p('mlp', 'B1');
      const ops: LayerOperators = {
        layer: l,
        attn: { P: await ints(`model.layers.${l}.self_attn.apex.P`), N: await ints(`model.layers.${l}.self_attn.apex.N`), B1: B1a.values, B2: p('self_attn', 'B2').values, nb: B1a.shape[0]!, bs: B1a.shape[1]!, a: p('self_attn', 'a').values, bV: p('self_attn', 'b_v').values },
        mlp: { P: await ints(`model.layers.${l}.mlp.apex.P`), N: await ints(`model.layers.${l}.mlp.apex.N`), B1: B1m.values, B2: p('mlp', 'B2').values, nb: B1m.shape[0]!, bs: B1m.shape[1]!, a: p('mlp', 'a').values, bGate: p('mlp', 'b_gate').values, bUp: p('mlp', 'b_up').values },
      };
      moved = Math.max(moved, ...Array.from(ops.mlp!.a, (v) => Math.abs(v - 1)));
      for (const t of layerTensors(spec, l)) fuseLayerTensor(t, weights.get(t.name)!, ops, spec);
    }
    const fused = modelWeightsFromArrays(spec, weights);
    const head: number[][] = [];
    const channel: number[][] = [];
    tf.tidy(() => {
      forwardLogits(fused, ids, {
        observe: (a) => {
          const [b, t] = a.attention.shape;
          head[a.layer] = Array.from(tf.sum(tf.square(tf.reshape(a.attention, [b, t, H, spec.headDim])), [0, 1, 3]).dataSync());
          channel[a.layer] = Array.from(tf.sum(tf.square(a.gate), [0, 1]).dataSync());
        },
      });
    });
    tf.dispose([...fused.tensors.values()]);
    return { head, channel, moved };
  }
  const step2 = await normsAfter(1);
  const step3 = await normsAfter(2);
  tf.dispose(ids);
  await units.close();
  expect(step2.moved, 'the operators moved before step 2').toBeGreaterThan(1e-3);
  expect(step3.moved, 'the operators moved before step 3').toBeGreaterThan(1e-2);

  const scores = await readAllF32(join(run, 'stages/1/scores.safetensors'));
  const meta = await SafetensorsFile.open(join(run, 'stages/1/scores.safetensors'));
  expect(meta.metadata.micro_batches).toBe('3');
  await meta.close();
  let differs = 0;
  for (let l = 0; l < L; l++) {
    const headCounts = [baseHead[l]!, step2.head[l]!, step3.head[l]!].map((h) => counts(groupNorms(h, nKv), headK));
    const chCounts = [baseChannel[l]!, step2.channel[l]!, step3.channel[l]!].map((c) => counts(c.map(Math.sqrt), channelK));
    differs += chCounts[0]!.filter((v, i) => v !== chCounts[2]![i]).length;
    const sum = (rows: number[][]) => rows[0]!.map((_, i) => rows[0]![i]! + rows[1]![i]! + rows[2]![i]!);
    expect(Array.from(scores.get(`model.layers.${l}.self_attn.apex.score`)!.values), `layer ${l} heads`).toEqual(sum(headCounts));
    expect(Array.from(scores.get(`model.layers.${l}.mlp.apex.score`)!.values), `layer ${l} channels`).toEqual(sum(chCounts));
  }
  // Step 3's counts are not the base model's: the test tells a recorder reading the augmented
  // forward from one reading the frozen weights.
  expect(differs).toBeGreaterThan(0);
  await checkpoint.close();
});
