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
interface RefStage { losses: number[]; grad_norms: number[]; lrs: number[]; tensors: Record<string, RefTensor>; fused?: Record<string, RefTensor> }
const fixture = JSON.parse(readFileSync('fixtures/refs/train/trajectories.json', 'utf8')) as { cases: Record<string, { stages: RefStage[] }> };
const base: Map<string, Tensor> = await readAllF32(join(TRAJECTORY_MODEL, 'model.safetensors'));
const wanted = process.argv.slice(2);
const rel = (a: number, b: number) => (a === b ? 0 : Math.abs(a - b) / Math.abs(b));

/** Largest sampled-entry and norm deviations of ΔW, and entries changed where the reference changes none. */
function updates(got: Map<string, Tensor>, start: (name: string) => Tensor, want: Record<string, RefTensor>) {
  let entry = 0;
  let norm = 0;
  let outside = 0;
  for (const [name, t] of Object.entries(want)) {
    const final = got.get(name);
    if (!final) { outside = Infinity; continue; }
    const initial = start(name);
    const delta = final.values.map((v, i) => v - initial.values[i]!);
    let sq = 0;
    for (const d of delta) sq += d * d;
    if (t.delta_norm === 0) { outside += delta.filter((d) => d !== 0).length; continue; }
    norm = Math.max(norm, rel(Math.sqrt(sq), t.delta_norm));
    for (const [i, d] of t.samples) entry = Math.max(entry, Math.abs(delta[i]! - d) / t.max_abs_delta);
    if (t.changed_rows || t.changed_cols) {
      const [rows, cols] = t.shape as [number, number];
      const keepRow = new Set(t.changed_rows ?? Array.from({ length: rows }, (_, i) => i));
      const keepCol = new Set(t.changed_cols ?? Array.from({ length: cols }, (_, i) => i));
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (!(keepRow.has(i) && keepCol.has(j)) && final.values[i * cols + j] !== initial.values[i * cols + j]) outside += 1;
    }
  }
  const extra = [...got.keys()].filter((n) => !(n in want)).length;
  return `ΔW entry ${entry.toExponential(1)}  ‖ΔW‖ ${norm.toExponential(1)}  changed outside ${outside}  extra tensors ${extra}`;
}

for (const c of TRAJECTORY_CASES.filter((x) => wanted.length === 0 || wanted.includes(x.name))) {
  const ref = fixture.cases[c.name]!;
  const r = await runTrajectory(c);
  try {
    let input = base;
    r.stages.forEach((st, k) => {
      const want = ref.stages[k]!;
      const lr = Math.max(...st.lrs.map((v, i) => Math.abs(v - want.lrs[i]!) / Math.max(...want.lrs)));
      const loss = Math.max(...st.losses.map((v, i) => rel(v, want.losses[i]!)));
      const grad = Math.max(...st.gradNorms.map((v, i) => rel(v, want.grad_norms[i]!)));
      const from = input;
      console.log(`${`${c.name}/${st.stage}`.padEnd(26)} lr ${lr.toExponential(1)}  loss ${loss.toExponential(1)}  grad norm ${grad.toExponential(1)}  ${updates(st.final, (n) => st.initial.get(n) ?? from.get(n)!, want.tensors)}`);
      if (st.fused && want.fused) {
        console.log(`${`${c.name}/${st.stage} fused`.padEnd(26)} ${updates(st.fused, (n) => from.get(n)!, want.fused)}`);
        input = st.fused;
      }
    });
  } finally {
    r.cleanup();
  }
}
