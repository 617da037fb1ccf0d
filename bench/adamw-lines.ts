/**
 * AdamW over `structured`'s partially trained projections, masked (whole-tensor moments) against
 * with `lines` (moments of the trained rows/columns only; adamw.ts): the update and the trainer's
 * masking / taking of the lines (AdamW.trainedGradient), timed apart on the 10m benchmark model's
 * 56 projections (8 layers; q, k, v, gate, up by rows, o, down by columns) with every other line
 * trained, wasm backend, median of 15 after 3 warm-up steps, two rounds each.
 * Results: docs/reliability.md ("structured keeps optimizer state for its trained lines only").
 *
 *   npx tsx bench/adamw-lines.ts
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/model/backend.js';
import { AdamW, type OptimizedParameter } from '../src/train/adamw.js';
await selectBackend('wasm');
// The 10m bench model's projections: 8 layers × (q 256x256, k 128x256, v 128x256, o 256x256 cols, gate 688x256, up 688x256, down 256x688 cols), half the lines.
const shapes: [number, number, 0 | 1][] = [];
for (let l = 0; l < 8; l++) shapes.push([256, 256, 0], [128, 256, 0], [128, 256, 0], [256, 256, 1], [688, 256, 0], [688, 256, 0], [256, 688, 1]);
const build = (lines: boolean) => {
  const params: OptimizedParameter[] = shapes.map(([R, C, axis], i) => {
    const extent = axis === 0 ? R : C;
    const idx = Int32Array.from({ length: Math.floor(extent / 2) }, (_, j) => 2 * j);
    const v = new Float32Array(extent); for (const j of idx) v[j] = 1;
    const mask = tf.tensor(v, axis === 0 ? [extent, 1] : [1, extent]);
    return { name: `t${i}`, variable: tf.variable(tf.randomNormal([R, C])), mask, ...(lines ? { lines: { axis, indices: idx } } : {}) };
  });
  return { params, opt: new AdamW(params) };
};
const grads = new Map(shapes.map(([R, C], i) => [`t${i}`, tf.randomNormal([R, C])] as const));
for (const lines of [false, true, false, true]) {
  const { params, opt } = build(lines);
  const g = new Map([...grads].map(([n, t]) => [n, opt.trainedGradient(n, t)] as const));
  for (let i = 0; i < 3; i++) opt.apply(g, 1e-3);
  const times: number[] = [];
  for (let i = 0; i < 15; i++) { const t0 = performance.now(); opt.apply(g, 1e-3); await params[0]!.variable.data(); times.push(performance.now() - t0); }
  // the trainer's masking/taking cost too
  const tt: number[] = [];
  for (let i = 0; i < 15; i++) { const t0 = performance.now(); const x = [...grads].map(([n, t]) => opt.trainedGradient(n, t)); await x[0]!.data(); tt.push(performance.now() - t0); tf.dispose(x); }
  times.sort((a, b) => a - b); tt.sort((a, b) => a - b);
  console.log(lines ? 'lines ' : 'masked', 'apply median ms', times[7]!.toFixed(1), 'trainedGradient median ms', tt[7]!.toFixed(1));
  opt.dispose(); tf.dispose(params.flatMap((p) => [p.variable, p.mask!])); tf.dispose([...g.values()].filter((t) => ![...grads.values()].includes(t)));
}
