// Whole training stages against an independent PyTorch implementation of the spec
// (scripts/pytorch/train_reference.py, APEX-METHOD §2–§5): vanilla, LoRA, and APEX operators,
// structured and full, 6 steps each on stories260K (GQA, tied embeddings), cpu backend, with
// gradient accumulation 2, clipping active, weight decay 0.1, the first plan's warm-up and
// cosine, and token-weighted accumulation (loss masks) in two cases. The reference values are
// PyTorch's in float64 (fixtures/refs/train/trajectories.json; its README says how it was made):
// no Python is needed here.
//
// Tolerances, against float64, about ten times the spread of a float32 implementation: PyTorch
// itself run in float32 lies this far from its float64 run (the fixture's `float32_deviation`,
// largest over the cases); apex lies as far or nearer (`apex_deviation`).
// - learning rates: 1e-12 relative; the same formula in both.
// - losses: 5e-6 relative (float32: ≤ 5.6e-7).
// - gradient norms before clipping: 3e-5 relative (float32: ≤ 3.6e-6).
// - weights, as the update ΔW = W_final − W_initial of every trainable tensor: ‖ΔW‖ within 1e-4
//   relative (float32: ≤ 1.0e-5), and each of 16 sampled entries within 1e-2 of the tensor's
//   largest |ΔW| (float32, any entry: ≤ 2.4e-3; Adam divides each entry by its own √v, so an
//   entry with small, sign-changing gradients carries the rounding of its moments into its
//   update).
// - what may not change does not: every trainable tensor is one the reference trains (so
//   `operators` trains no model tensor), and rows/columns the reference leaves unchanged
//   (`structured`'s unselected units) keep their bits.
// The test fails for a change as small as AdamW's β2 0.95 → 0.96 or ε 1e-8 → 1e-6, a warm-up of
// 3 steps instead of 2, or M in place of Mᵀ (fixtures/refs/train/README.md).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inputsDigest, runTrajectory, TRAJECTORY_CASES, TRAJECTORY_MODEL, type Tensor } from './trajectory-driver.js';
import { readAllF32 } from './stage-fixtures.js';

interface RefTensor {
  shape: number[];
  max_abs_delta: number;
  delta_norm: number;
  samples: [number, number][];
  changed_rows?: number[];
  changed_cols?: number[];
}

interface RefCase {
  inputs_sha256: string;
  losses: number[];
  grad_norms: number[];
  lrs: number[];
  tensors: Record<string, RefTensor>;
}

const fixture = JSON.parse(readFileSync('fixtures/refs/train/trajectories.json', 'utf8')) as { cases: Record<string, RefCase> };

const TOLERANCE = { lr: 1e-12, loss: 5e-6, gradNorm: 3e-5, deltaEntry: 1e-2, deltaNorm: 1e-4 } as const;

function relative(a: number, b: number): number {
  return Math.abs(a - b) / Math.abs(b);
}

let base: Map<string, { shape: number[]; values: Float32Array }>;
beforeAll(async () => {
  base = await readAllF32(join(TRAJECTORY_MODEL, 'model.safetensors'));
});

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

describe('one stage computes what the PyTorch reference computes (stories260K, cpu)', () => {
  for (const c of TRAJECTORY_CASES) {
    it(c.name, async () => {
      const ref = fixture.cases[c.name]!;
      const r = await runTrajectory(c);
      cleanups.push(r.cleanup);
      expect(inputsDigest(r), 'the data, micro-batches, selection or initial operators/adapters apex draws changed: make the fixture again (fixtures/refs/train/README.md)').toBe(ref.inputs_sha256);

      expect(r.lrs.length).toBe(ref.lrs.length);
      r.lrs.forEach((lr, i) => expect(Math.abs(lr - ref.lrs[i]!), `lr of step ${i + 1}`).toBeLessThanOrEqual(TOLERANCE.lr * Math.max(...ref.lrs)));
      r.losses.forEach((loss, i) => expect(relative(loss, ref.losses[i]!), `loss of step ${i + 1}: apex ${loss}, reference ${ref.losses[i]}`).toBeLessThanOrEqual(TOLERANCE.loss));
      r.gradNorms.forEach((g, i) => expect(relative(g, ref.grad_norms[i]!), `gradient norm of step ${i + 1}: apex ${g}, reference ${ref.grad_norms[i]}`).toBeLessThanOrEqual(TOLERANCE.gradNorm));

      expect([...r.final.keys()].sort()).toEqual(Object.keys(ref.tensors).sort());
      for (const [name, t] of Object.entries(ref.tensors)) {
        const final = r.final.get(name)!;
        const initial: Tensor = r.initial.get(name) ?? base.get(name)!;
        expect(final.shape, name).toEqual(t.shape);
        const delta = final.values.map((v, i) => v - initial.values[i]!);
        let sq = 0;
        for (let i = 0; i < delta.length; i++) sq += delta[i]! * delta[i]!;
        expect(relative(Math.sqrt(sq), t.delta_norm), `‖ΔW‖ of ${name}`).toBeLessThanOrEqual(TOLERANCE.deltaNorm);
        for (const [i, d] of t.samples) expect(Math.abs(delta[i]! - d), `ΔW[${i}] of ${name}: apex ${delta[i]}, reference ${d}`).toBeLessThanOrEqual(TOLERANCE.deltaEntry * t.max_abs_delta);
        if (t.changed_rows || t.changed_cols) {
          const [rows, cols] = t.shape as [number, number];
          const keepRow = new Set(t.changed_rows ?? Array.from({ length: rows }, (_, i) => i));
          const keepCol = new Set(t.changed_cols ?? Array.from({ length: cols }, (_, i) => i));
          let moved = 0;
          for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (!(keepRow.has(i) && keepCol.has(j)) && final.values[i * cols + j] !== initial.values[i * cols + j]) moved += 1;
          expect(moved, `${name}: entries outside the rows/columns the reference trains that changed`).toBe(0);
        }
      }
    });
  }
});
