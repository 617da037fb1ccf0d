/**
 * Transpose on the wasm backend: tfjs-wasm's own kernel against apex's SIMD tiles
 * (src/model/wasm-transpose.ts), on the shapes a training step of the ~10M benchmark model
 * transposes (docs/benchmarks.md, "Transposes"). Both run in this process on the same backend,
 * alternating in rounds; each figure is the median over rounds of the mean of `reps` calls.
 *
 *   npx tsx bench/transpose.ts [--reps 100] [--rounds 7]
 */
import * as tf from '@tensorflow/tfjs';
import { cpus, loadavg } from 'node:os';

// tfjs-wasm registers its kernels on import; keep its Transpose before apex wraps it.
await import('@tensorflow/tfjs-backend-wasm');
const tfjsTranspose = tf.getKernel('Transpose', 'wasm')!.kernelFunc;
const { selectBackend } = await import('../src/model/backend.js');
const { lastTwoSwappedPerm } = await import('../src/model/wasm-transpose.js');
await selectBackend('wasm');

const argv = process.argv.slice(2);
const opt = (name: string, fallback: number) => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : fallback; };
const REPS = opt('--reps', 100);
const ROUNDS = opt('--rounds', 7);
// The 10M model's transposes at 2 × 128 tokens (hidden 256, I 688, vocab 8192, 8 heads of 32).
const SHAPES: number[][] = [[256, 256], [256, 688], [688, 256], [8192, 256], [256, 8192], [256, 128], [2, 4, 256, 128]];

const backend = tf.backend();
function timeMs(f: () => void): number {
  for (let i = 0; i < 5; i++) f();
  const t = performance.now();
  for (let i = 0; i < REPS; i++) f();
  return (performance.now() - t) / REPS;
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}; node ${process.version}; ${new Date().toISOString()}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`\n| shape (last two axes swapped) | tfjs-wasm ms | apex ms | speed-up | apex GB/s (read + write) |`);
console.log('|---|---|---|---|---|');
for (const shape of SHAPES) {
  const x = tf.randomNormal(shape);
  const perm = lastTwoSwappedPerm(shape.length);
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    theirs.push(timeMs(() => {
      const out = tfjsTranspose({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo;
      backend.disposeData(out.dataId);
    }));
    ours.push(timeMs(() => tf.transpose(x, perm).dispose()));
  }
  const a = median(theirs);
  const b = median(ours);
  const bytes = 8 * x.size;
  console.log(`| [${shape.join(', ')}] | ${a.toFixed(3)} | ${b.toFixed(3)} | ${(a / b).toFixed(1)}× | ${(bytes / (b * 1e6)).toFixed(1)} |`);
  x.dispose();
}
