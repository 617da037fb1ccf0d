// How far apex's stages lie from the PyTorch reference in fixtures/refs/train/trajectories.json,
// per case: the largest relative difference of the losses, the gradient norms, ‖ΔW‖, and of a
// sampled ΔW entry relative to its tensor's largest |ΔW| (what test/train/pytorch-trajectory.test.ts
// bounds), and the entries changed outside the rows/columns the reference trains.
//
//   npx tsx scripts/pytorch/trajectory-deviation.ts [case …]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readAllF32 } from '../../test/train/stage-fixtures.js';
import { runTrajectory, TRAJECTORY_CASES, TRAJECTORY_MODEL, type Tensor } from '../../test/train/trajectory-driver.js';

interface RefTensor { shape: number[]; max_abs_delta: number; delta_norm: number; samples: [number, number][]; changed_rows?: number[]; changed_cols?: number[] }
const fixture = JSON.parse(readFileSync('fixtures/refs/train/trajectories.json', 'utf8')) as { cases: Record<string, { losses: number[]; grad_norms: number[]; lrs: number[]; tensors: Record<string, RefTensor> }> };
const base = await readAllF32(join(TRAJECTORY_MODEL, 'model.safetensors'));
const wanted = process.argv.slice(2);
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
for (const c of TRAJECTORY_CASES.filter((x) => wanted.length === 0 || wanted.includes(x.name))) {
  const ref = fixture.cases[c.name]!;
  const r = await runTrajectory(c);
  try {
    const lr = Math.max(...r.lrs.map((v, i) => Math.abs(v - ref.lrs[i]!) / Math.max(...ref.lrs)));
    const loss = Math.max(...r.losses.map((v, i) => rel(v, ref.losses[i]!)));
    const grad = Math.max(...r.gradNorms.map((v, i) => rel(v, ref.grad_norms[i]!)));
    let entry = 0;
    let norm = 0;
    let outside = 0;
    for (const [name, t] of Object.entries(ref.tensors)) {
      const final = r.final.get(name);
      if (!final) { outside = Infinity; continue; }
      const initial: Tensor = r.initial.get(name) ?? base.get(name)!;
      const delta = final.values.map((v, i) => v - initial.values[i]!);
      norm = Math.max(norm, rel(Math.hypot(...delta), t.delta_norm));
      for (const [i, d] of t.samples) entry = Math.max(entry, Math.abs(delta[i]! - d) / t.max_abs_delta);
      if (t.changed_rows || t.changed_cols) {
        const [rows, cols] = t.shape as [number, number];
        const keepRow = new Set(t.changed_rows ?? Array.from({ length: rows }, (_, i) => i));
        const keepCol = new Set(t.changed_cols ?? Array.from({ length: cols }, (_, i) => i));
        for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (!(keepRow.has(i) && keepCol.has(j)) && final.values[i * cols + j] !== initial.values[i * cols + j]) outside += 1;
      }
    }
    const extra = [...r.final.keys()].filter((n) => !(n in ref.tensors)).length;
    console.log(`${c.name.padEnd(16)} lr ${lr.toExponential(1)}  loss ${loss.toExponential(1)}  grad norm ${grad.toExponential(1)}  ΔW entry ${entry.toExponential(1)}  ‖ΔW‖ ${norm.toExponential(1)}  changed outside ${outside}  extra tensors ${extra}`);
  } finally {
    r.cleanup();
  }
}
