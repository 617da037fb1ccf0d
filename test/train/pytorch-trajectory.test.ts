// Whole training stages against an independent PyTorch implementation of the spec
// (scripts/pytorch/train_reference.py, APEX-METHOD §2–§5) on stories260K (GQA, tied
// embeddings), cpu backend: vanilla, LoRA, and APEX operators and full, 5 steps each, with
// gradient accumulation 2, clipping active, weight decay 0.1, the first plan's warm-up and
// cosine, and token-weighted accumulation (loss masks) in two cases; and APEX structured in two
// stages of 4 steps: the fused model of stage 1 (§3's rules), stage 2's fresh moments and
// operators and its learning rate continuing from stage 1's (§5's re-warm-up and cosine). The
// reference values are PyTorch's in float64 (fixtures/refs/train/trajectories.json; its README
// says how it was made): no Python is needed here.
//
// Tolerances, against float64, about ten times the spread of a float32 implementation: PyTorch
// itself run in float32 lies this far from its float64 run (the fixture's `float32_deviation`,
// largest over the cases); apex lies as far or nearer (`apex_deviation`).
// - learning rates: 1e-12 relative; the same formula in both.
// - losses: 5e-6 relative (float32: ≤ 5.6e-7).
// - gradient norms before clipping: 3e-5 relative (float32: ≤ 3.6e-6).
// - weights, as the update ΔW = W_final − W_initial of every trainable tensor (and of every
//   tensor of a fused model against the stage's input): ‖ΔW‖ within 1e-4 relative (float32:
//   ≤ 2.0e-5), and each of 16 sampled entries within 1e-2 of the tensor's
//   largest |ΔW| (float32, any entry: ≤ 2.4e-3; Adam divides each entry by its own √v, so an
//   entry with small, sign-changing gradients carries the rounding of its moments into its
//   update).
// - the selected units (P, N, E per layer) are the reference's: its own analysis of the base
//   model for stage 1, its own rank counts over stage 1's training micro-batches for stage 2.
// - what may not change does not: every trainable tensor is one the reference trains (so
//   `operators` trains no model tensor), and rows/columns the reference leaves unchanged
//   (`structured`'s unselected units) keep their bits.
// The test fails for a change as small as AdamW's β2 0.95 → 0.96 or ε 1e-8 → 1e-6, a warm-up of
// 3 steps instead of 2, no re-warm-up at a stage boundary, M in place of Mᵀ, or a fusion that
// forgets b (fixtures/refs/train/README.md lists what was tried).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inputsDigest, runTrajectory, TRAJECTORY_CASES, TRAJECTORY_MODEL, type Tensor, type TrajectoryStage } from './trajectory-driver.js';
import { readAllF32 } from './stage-fixtures.js';

interface RefTensor {
  shape: number[];
  max_abs_delta: number;
  delta_norm: number;
  samples: [number, number][];
  changed_rows?: number[];
  changed_cols?: number[];
}

interface RefStage {
  stage: number;
  /** The units the reference selects (APEX): from its own analysis (stage 1) or its own training counts. */
  selection: TrajectoryStage['selection'];
  losses: number[];
  grad_norms: number[];
  lrs: number[];
  tensors: Record<string, RefTensor>;
  /** The fused model after the stage, when a later stage follows: ΔW from the stage's input model. */
  fused?: Record<string, RefTensor>;
}

interface RefCase {
  inputs_sha256: string;
  stages: RefStage[];
}

const fixture = JSON.parse(readFileSync('fixtures/refs/train/trajectories.json', 'utf8')) as { cases: Record<string, RefCase> };

const TOLERANCE = { lr: 1e-12, loss: 5e-6, gradNorm: 3e-5, deltaEntry: 1e-2, deltaNorm: 1e-4 } as const;

function relative(a: number, b: number): number {
  return Math.abs(a - b) / Math.abs(b);
}

let base: Map<string, Tensor>;
beforeAll(async () => {
  base = await readAllF32(join(TRAJECTORY_MODEL, 'model.safetensors'));
});

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

/** ΔW = final − start of every tensor the reference digests, checked against it; `what` names them in messages. */
function expectUpdates(what: string, got: Map<string, Tensor>, start: (name: string) => Tensor, want: Record<string, RefTensor>): void {
  expect([...got.keys()].sort(), `${what}: tensors`).toEqual(Object.keys(want).sort());
  for (const [name, t] of Object.entries(want)) {
    const final = got.get(name)!;
    const initial = start(name);
    expect(final.shape, name).toEqual(t.shape);
    const delta = final.values.map((v, i) => v - initial.values[i]!);
    let sq = 0;
    for (let i = 0; i < delta.length; i++) sq += delta[i]! * delta[i]!;
    if (t.delta_norm === 0) {
      // Unchanged in the reference (frozen, or a fused tensor no operator touches): the same bits.
      expect(final.values.every((v, i) => Object.is(v, initial.values[i])), `${what}: ${name} changed, the reference leaves it as it was`).toBe(true);
      continue;
    }
    expect(relative(Math.sqrt(sq), t.delta_norm), `${what}: ‖ΔW‖ of ${name}`).toBeLessThanOrEqual(TOLERANCE.deltaNorm);
    for (const [i, d] of t.samples) expect(Math.abs(delta[i]! - d), `${what}: ΔW[${i}] of ${name}: apex ${delta[i]}, reference ${d}`).toBeLessThanOrEqual(TOLERANCE.deltaEntry * t.max_abs_delta);
    if (t.changed_rows || t.changed_cols) {
      const [rows, cols] = t.shape as [number, number];
      const keepRow = new Set(t.changed_rows ?? Array.from({ length: rows }, (_, i) => i));
      const keepCol = new Set(t.changed_cols ?? Array.from({ length: cols }, (_, i) => i));
      let moved = 0;
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (!(keepRow.has(i) && keepCol.has(j)) && final.values[i * cols + j] !== initial.values[i * cols + j]) moved += 1;
      expect(moved, `${what}: entries of ${name} outside the rows/columns the reference changes that changed`).toBe(0);
    }
  }
}

describe('whole stages compute what the PyTorch reference computes (stories260K, cpu)', () => {
  for (const c of TRAJECTORY_CASES) {
    it(c.name, async () => {
      const ref = fixture.cases[c.name]!;
      const r = await runTrajectory(c);
      cleanups.push(r.cleanup);
      expect(inputsDigest(r), 'the data, micro-batches, selection or initial operators/adapters apex draws changed: make the fixture again (fixtures/refs/train/README.md)').toBe(ref.inputs_sha256);
      expect(r.stages.length).toBe(ref.stages.length);
      // Each stage starts from the model apex fused after the one before (stage 1: the base model).
      let input: Map<string, Tensor> = base;
      r.stages.forEach((st, k) => {
        const want = ref.stages[k]!;
        const at = `stage ${st.stage}`;
        expect(st.selection?.map(({ layer, heads, channels }) => ({ layer, heads, channels })) ?? null, `${at}: apex selects other units than the reference (§2: analysis, rank counts during training, P/N/E)`).toEqual(want.selection);
        expect(st.lrs.length, at).toBe(want.lrs.length);
        st.lrs.forEach((lr, i) => expect(Math.abs(lr - want.lrs[i]!), `${at}: lr of step ${i + 1}`).toBeLessThanOrEqual(TOLERANCE.lr * Math.max(...want.lrs)));
        st.losses.forEach((loss, i) => expect(relative(loss, want.losses[i]!), `${at}: loss of step ${i + 1}: apex ${loss}, reference ${want.losses[i]}`).toBeLessThanOrEqual(TOLERANCE.loss));
        st.gradNorms.forEach((g, i) => expect(relative(g, want.grad_norms[i]!), `${at}: gradient norm of step ${i + 1}: apex ${g}, reference ${want.grad_norms[i]}`).toBeLessThanOrEqual(TOLERANCE.gradNorm));
        const from = input;
        expectUpdates(`${at}, trained`, st.final, (name) => st.initial.get(name) ?? from.get(name)!, want.tensors);
        expect(st.fused !== undefined, `${at}: fused model`).toBe(want.fused !== undefined);
        if (st.fused && want.fused) {
          expectUpdates(`${at}, fused model`, st.fused, (name) => from.get(name)!, want.fused);
          input = st.fused;
        }
      });
    });
  }
});
