/**
 * Part `kernels` of the GPU check (bench/gpu-check.ts): apex's own webgpu programs against the
 * cpu backend on the same inputs, since CI has no GPU to run them:
 *
 *   AdamW (src/train/adamw-webgpu.ts)        3 steps, export/import, 2 steps; unmasked / row / column / full masks, decay, clipping scale: p, m, v
 *   mixing sites (src/ops/webgpu-site-kernels.ts)  rows and columns (1 and 2 slots, n = 1 … 129): value and every gradient
 *   dense Monarch M (src/ops/webgpu-monarch-dense.ts)  5 block shapes: M and both factor gradients
 *   Σ g² (src/train/sum-squares-webgpu.ts)     13 tensors of 0 … 300,000 elements, 3 small ones, one of 5,000,003
 *   RMSNorm, rotary heads, silu(gate)·up (src/model/webgpu-layer-kernels.ts)  value and gradients, 3–4 shapes each
 *   the training loss with logits in blocks (src/train/model-loss.ts, what webgpu does past its storage binding)  stories260K, blocks of 7 positions against cpu in one piece: loss and gradients
 *
 * References: cpu's tfjs-ops routes (`kernels: false`, `portable: true`; the loss in one piece), which the unit tests
 * check against hand-computed and autodiff values. Also counts the launches of each program
 * route beside the tfjs-ops route on webgpu (what the programs exist to save).
 */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/model/backend.js';
import { gatedUp, rmsNorm } from '../src/model/layer-math.js';
import { ropeInverseFrequencies, ropeTensors, rotaryHeads } from '../src/model/rope.js';
import { lineSet } from '../src/ops/line-moves.js';
import { monarchDenseTf } from '../src/ops/monarch-dense-tf.js';
import { mixColumnsWithM, mixRows, type SiteLines } from '../src/ops/site-mixing.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { disposeModelWeights, loadModelWeights } from '../src/model/model-weights.js';
import { AdamW } from '../src/train/adamw.js';
import { modelLoss } from '../src/train/model-loss.js';
import { sumOfSquaresWebgpu } from '../src/train/sum-squares-webgpu.js';
import { Rng } from '../src/util/rng.js';

/** Largest relative difference (max |Δ| / max |reference|) allowed: float32 summation order and fused multiply-adds. */
export const KERNEL_TOLERANCE = 2e-5;

type Arrays = Float32Array[];

function relDiff(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) return Infinity;
  let d = 0;
  let s = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(got[i]! - ref[i]!));
    s = Math.max(s, Math.abs(ref[i]!));
  }
  return Number.isNaN(d) ? Infinity : d / Math.max(s, 1e-30);
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function random(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.next());
}

// ---------------------------------------------------------------------------------------------

interface AdamCase { name: string; shape: number[]; mask?: number[]; decay: number; scale?: number }
const ADAM_CASES: AdamCase[] = [
  { name: 'unmasked', shape: [37, 129], decay: 0 },
  { name: 'decay, clipping scale', shape: [300], decay: 0.1, scale: 0.37 },
  { name: 'row mask', shape: [64, 48], mask: [64, 1], decay: 0.1, scale: 0.8 },
  { name: 'column mask', shape: [64, 48], mask: [1, 48], decay: 0 },
  { name: 'full mask', shape: [10, 7], mask: [10, 7], decay: 0.05 },
  // More elements than 65,535 workgroups of 128 threads: tfjs splits the flat dispatch in two
  // dimensions (an embedding of a 7B model is 131 M elements).
  { name: 'row mask, 8.4 M elements', shape: [4097, 2049], mask: [4097, 1], decay: 0.01, scale: 0.5 },
];

async function adamRuns(kernels: boolean): Promise<Record<string, Arrays>> {
  const out: Record<string, Arrays> = {};
  for (const c of ADAM_CASES) {
    const rng = new Rng(7);
    const p = tf.variable(tf.tensor(random(rng, size(c.shape)), c.shape));
    const mask = c.mask ? tf.tensor(Float32Array.from({ length: size(c.mask) }, (_, i) => (i % 3 === 1 ? 0 : 1)), c.mask) : undefined;
    const scale = c.scale !== undefined ? tf.scalar(c.scale) : undefined;
    const make = () => new AdamW([{ name: 'x', variable: p, ...(mask ? { mask } : {}) }], { weightDecay: c.decay, kernels });
    const steps = (opt: AdamW, count: number) => {
      for (let s = 0; s < count; s++) {
        const g = tf.tensor(random(rng, size(c.shape)), c.shape);
        opt.apply(new Map([['x', g]]), 1e-2, scale);
        g.dispose();
      }
    };
    // Three steps, then the state through export and import into a fresh optimizer (a resumed
    // checkpoint), then two more.
    const first = make();
    steps(first, 3);
    const saved = await first.exportState();
    first.dispose();
    const opt = make();
    opt.importState(saved);
    steps(opt, 2);
    const state = await opt.exportState();
    out[c.name] = [(await p.data()) as Float32Array, state.firstMoments.get('x')!, state.secondMoments.get('x')!];
    opt.dispose();
    tf.dispose([p, ...(mask ? [mask] : []), ...(scale ? [scale] : [])]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

interface SiteCase { name: string; axis: 0 | 1; extent: number; slots: number; P: number[]; N: number[]; shapes: number[][] }
const range = (n: number, step: number, offset: number) => Array.from({ length: n }, (_, i) => i * step + offset);
const SITE_CASES: SiteCase[] = [
  { name: 'rows 10 × 6, n 3', axis: 0, extent: 10, slots: 1, P: [5, 0, 7], N: [2, 9, 4], shapes: [[10, 6], [3, 3], [3], [3]] },
  { name: 'rows 688 × 256, n 129', axis: 0, extent: 688, slots: 1, P: range(129, 5, 0), N: range(129, 5, 2), shapes: [[688, 256], [129, 129], [129], [129]] },
  { name: 'columns 7 × 12, n 3', axis: 1, extent: 12, slots: 1, P: [1, 6, 8], N: [3, 0, 10], shapes: [[7, 12], [3, 3], [3]] },
  { name: 'columns 5 × 12, 2 slots of 2', axis: 1, extent: 12, slots: 2, P: [1, 6, 8, 11], N: [3, 0, 10, 5], shapes: [[5, 12], [2, 2], [2]] },
  { name: 'columns 4 × 6, 2 slots of 1', axis: 1, extent: 6, slots: 2, P: [0, 5], N: [2, 3], shapes: [[4, 6], [1, 1], [1]] },
  { name: 'columns 256 × 688, n 129', axis: 1, extent: 688, slots: 1, P: range(129, 5, 0), N: range(129, 5, 2), shapes: [[256, 688], [129, 129], [129]] },
];

function siteLines(c: SiteCase): SiteLines {
  return {
    P: lineSet(Int32Array.from(c.P), c.axis, c.extent),
    N: lineSet(Int32Array.from(c.N), c.axis, c.extent),
    both: lineSet(Int32Array.from([...c.P, ...c.N]), c.axis, c.extent),
  };
}

function applySite(c: SiteCase, site: SiteLines, xs: tf.Tensor[], portable: boolean): tf.Tensor2D {
  const [W, M, a, b] = xs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
  return c.axis === 0 ? mixRows(W, site, M, a, b, { portable }) : mixColumnsWithM(W, site, c.slots, M, a, { portable });
}

async function siteRuns(portable: boolean): Promise<Record<string, Arrays>> {
  const out: Record<string, Arrays> = {};
  const rng = new Rng(17);
  for (const c of SITE_CASES) {
    const site = siteLines(c);
    const xs = c.shapes.map((shape, i) => tf.tensor(random(rng, size(shape), i >= 2 ? 0.5 : -1, 1), shape));
    const R = tf.tensor(random(rng, size(c.shapes[0]!)), c.shapes[0]);
    const value = (await tf.tidy(() => applySite(c, site, xs, portable)).data()) as Float32Array;
    const grads = tf.grads((...v: tf.Tensor[]) => tf.sum(tf.mul(applySite(c, site, v, portable), R)))(xs);
    out[c.name] = [value, ...(await Promise.all(grads.map((g) => g.data() as Promise<Float32Array>)))];
    tf.dispose([...xs, R, ...grads]);
    for (const l of [site.P, site.N, site.both]) l.dispose();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

const MONARCH_CASES: [number, number][] = [[3, 43], [4, 4], [1, 1], [2, 3], [8, 8]];

async function monarchRuns(): Promise<Record<string, Arrays>> {
  const out: Record<string, Arrays> = {};
  const rng = new Rng(3);
  for (const [nb, bs] of MONARCH_CASES) {
    const B1 = tf.tensor3d(random(rng, nb * bs * bs), [nb, bs, bs]);
    const B2 = tf.tensor3d(random(rng, nb * bs * bs), [nb, bs, bs]);
    const n = nb * bs;
    const R = tf.tensor2d(random(rng, n * n), [n, n]);
    const M = monarchDenseTf(B1, B2);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(monarchDenseTf(a as tf.Tensor3D, b as tf.Tensor3D), R)))([B1, B2]);
    out[`nb ${nb}, bs ${bs}`] = [(await M.data()) as Float32Array, ...(await Promise.all(grads.map((g) => g.data() as Promise<Float32Array>)))];
    tf.dispose([B1, B2, R, M, ...grads]);
  }
  return out;
}

// 70,000 rows: more workgroups than a dispatch dimension allows (65,535), so tfjs splits the dispatch in two.
const NORM_SHAPES: number[][] = [[2, 5, 8], [3, 128, 256], [1, 1, 688], [1, 70_000, 4]];
/** [B, T, heads, d] of a projection rotated into heads. */
const ROTARY_SHAPES: [number, number, number, number][] = [[2, 16, 8, 32], [1, 7, 4, 8], [2, 128, 2, 64]];
const GATED_SHAPES: number[][] = [[2, 5, 8], [2, 128, 688], [1, 1, 3]];

/** RMSNorm (value, dx, dw), rotary heads (value, dx) and silu(gate)·up (value, dgate, dup), through layer-math.ts / rope.ts. */
async function layerRuns(): Promise<Record<string, Arrays>> {
  const out: Record<string, Arrays> = {};
  const rng = new Rng(11);
  const read = async (ts: tf.Tensor[]) => Promise.all(ts.map((t) => t.data() as Promise<Float32Array>));
  for (const shape of NORM_SHAPES) {
    const d = shape.at(-1)!;
    const x = tf.tensor(random(rng, size(shape), -2, 2), shape);
    const w = tf.tensor1d(random(rng, d, 0.5, 1.5));
    const R = tf.tensor(random(rng, size(shape)), shape);
    const y = rmsNorm(x, w, 1e-5);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(rmsNorm(a, b as tf.Tensor1D, 1e-5), R)))([x, w]);
    out[`rmsNorm [${shape}]`] = await read([y, ...grads]);
    tf.dispose([x, w, R, y, ...grads]);
  }
  for (const [B, T, heads, d] of ROTARY_SHAPES) {
    const rope = ropeTensors(ropeInverseFrequencies({ type: 'default', theta: 10000, source: 'default' }, d), 3, T);
    const x = tf.tensor3d(random(rng, B * T * heads * d), [B, T, heads * d]);
    const R = tf.tensor4d(random(rng, B * T * heads * d), [B, heads, T, d]);
    const y = rotaryHeads(x, heads, rope);
    const [dx] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(rotaryHeads(a as tf.Tensor3D, heads, rope), R)))([x]);
    out[`rotary heads [${B}, ${T}, ${heads}, ${d}]`] = await read([y, dx!]);
    tf.dispose([x, R, y, dx!, rope.cos, rope.signedSin]);
  }
  for (const shape of GATED_SHAPES) {
    const gate = tf.tensor(random(rng, size(shape), -4, 4), shape);
    const up = tf.tensor(random(rng, size(shape)), shape);
    const R = tf.tensor(random(rng, size(shape)), shape);
    let observed: tf.Tensor | undefined;
    const y = gatedUp(gate, up, (a) => (observed = tf.keep(a)));
    const grads = tf.grads((g: tf.Tensor, u: tf.Tensor) => tf.sum(tf.mul(gatedUp(g, u), R)))([gate, up]);
    out[`silu(gate)·up [${shape}]`] = await read([y, ...grads, observed!]);
    tf.dispose([gate, up, R, y, ...grads, observed!]);
  }
  return out;
}

/**
 * Σ g² inputs: many tensors of mixed sizes (several workgroups, seven inputs in the second
 * launch), a few small ones (one workgroup, no final launch), one large tensor (every workgroup
 * walks it many times).
 */
const SUMSQ_SETS: Record<string, number[]> = {
  'mixed (13 tensors)': [1, 5, 255, 256, 257, 1000, 4096, 0, 33, 300_000, 129, 129, 70_000],
  'small (3 tensors)': [1, 5, 4000],
  'large (1 tensor)': [5_000_003],
};

function sumSquaresInputs(sizes: number[]): Float32Array[] {
  const rng = new Rng(5);
  return sizes.map((n) => random(rng, n));
}

/** Σ x² in float64 on the host. */
const sumSquaresReference = (arrays: Float32Array[]) => arrays.reduce((t, a) => t + a.reduce((s, x) => s + x * x, 0), 0);

/**
 * stories260K's training loss on 3 × 16 tokens (a padded and a prompt-masked sequence among
 * them) and its gradients for the embeddings (tied: the head's too), one layer's down_proj and
 * the final norm, with the logits in `blockRows`-position blocks (Infinity: one piece).
 */
async function lossRuns(blockRows: number): Promise<Record<string, Arrays>> {
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  const { model } = await loadModelWeights(checkpoint);
  await checkpoint.close();
  const rng = new Rng(11);
  const ids = tf.tensor2d(Array.from({ length: 48 }, () => rng.nextInt(model.spec.vocabSize)), [3, 16], 'int32');
  const mask = tf.tensor2d(Array.from({ length: 48 }, (_, i) => ((i >= 28 && i < 32) || (i >= 32 && i < 37) ? 0 : 1)), [3, 16]);
  const xs = ['model.embed_tokens.weight', 'model.layers.2.mlp.down_proj.weight', 'model.norm.weight'].map((n) => model.tensors.get(n)!);
  const out: Record<string, Arrays> = {};
  for (const reduction of ['mean', 'sum'] as const) {
    const maxLogitBytes = Number.isFinite(blockRows) ? 4 * model.spec.vocabSize * blockRows : Infinity;
    const { value, grads } = tf.engine().gradients(() => modelLoss(model, ids, mask, { reduction, maxLogitBytes }), xs, undefined, true);
    out[`loss (${reduction})`] = await Promise.all([value, ...grads].map((t) => t.data() as Promise<Float32Array>));
    tf.dispose([value, ...grads]);
  }
  tf.dispose([ids, mask]);
  disposeModelWeights(model);
  return out;
}

// ---------------------------------------------------------------------------------------------

interface Launches {
  count: number;
  byProgram: Record<string, number>;
  /** Host milliseconds inside the backend's runWebGPUProgram: recording the launches (bind groups, uniforms, pipeline lookups). */
  recordMs: number;
  /** Command buffers submitted (tfjs-webgpu submits every WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE launches and before reads) and host ms in those calls. */
  submits: number;
  submitMs: number;
  /** Reads from the device and the wall ms spent awaiting them (the GPU finishing its queue, the copy, the map). */
  reads: number;
  readMs: number;
}

/**
 * Counts the webgpu backend's program launches from now on (by program: tfjs's class name, or
 * apex's shader key) until `stop()`, with the host time spent recording them, submitting and
 * waiting for reads: on a GPU, what a step's time is made of. Does nothing on other backends.
 */
export function launchCounter(): { readonly launches: Launches; stop(): void } {
  const launches: Launches = { count: 0, byProgram: {}, recordMs: 0, submits: 0, submitMs: 0, reads: 0, readMs: 0 };
  if (tf.getBackend() !== 'webgpu') return { launches, stop: () => undefined };
  type Method = (...args: unknown[]) => unknown;
  const backend = tf.backend() as unknown as { runWebGPUProgram: Method; submitQueue: Method; read: Method };
  const original = { runWebGPUProgram: backend.runWebGPUProgram, submitQueue: backend.submitQueue, read: backend.read };
  backend.runWebGPUProgram = function (this: unknown, ...args: unknown[]) {
    const program = args[0] as { shaderKey: string; constructor: { name: string } };
    const key = program.constructor.name === 'Object' ? program.shaderKey : program.constructor.name;
    launches.byProgram[key] = (launches.byProgram[key] ?? 0) + 1;
    launches.count += 1;
    return timed(() => original.runWebGPUProgram.apply(this, args), (ms) => (launches.recordMs += ms));
  };
  backend.submitQueue = function (this: unknown, ...args: unknown[]) {
    launches.submits += 1;
    return timed(() => original.submitQueue.apply(this, args), (ms) => (launches.submitMs += ms));
  };
  backend.read = function (this: unknown, ...args: unknown[]) {
    launches.reads += 1;
    return timed(() => original.read.apply(this, args), (ms) => (launches.readMs += ms));
  };
  return { launches, stop: () => Object.assign(backend, original) };
}

/** f(), reporting its milliseconds to `done` when it returns, throws or (a promise) settles. */
function timed<T>(f: () => T, done: (ms: number) => void): T {
  const started = performance.now();
  const finish = () => done(performance.now() - started);
  let result: T;
  try {
    result = f();
  } catch (e) {
    finish();
    throw e;
  }
  if (result instanceof Promise) return result.finally(finish) as T;
  finish();
  return result;
}

const noLaunches = (): Launches => ({ count: 0, byProgram: {}, recordMs: 0, submits: 0, submitMs: 0, reads: 0, readMs: 0 });

/** The launches while `f` runs. */
async function countLaunches(f: () => Promise<unknown>): Promise<Launches> {
  const counter = launchCounter();
  try {
    await f();
  } finally {
    counter.stop();
  }
  return counter.launches;
}

function compareAll(got: Record<string, Arrays>, ref: Record<string, Arrays>, labels: string[]): { worst: number; cases: Record<string, Record<string, number>> } {
  const cases: Record<string, Record<string, number>> = {};
  let worst = 0;
  for (const [name, arrays] of Object.entries(ref)) {
    cases[name] = {};
    arrays.forEach((r, i) => {
      const d = relDiff(got[name]?.[i] ?? new Float32Array(0), r);
      cases[name]![labels[i] ?? `grad ${i}`] = Number(d.toExponential(2));
      worst = Math.max(worst, d);
    });
  }
  return { worst, cases };
}

/** The part: every program against cpu, and the launch counts of both routes on webgpu. */
export async function partKernels(): Promise<unknown> {
  await selectBackend('cpu');
  const ref = { adam: await adamRuns(false), sites: await siteRuns(true), monarch: await monarchRuns(), layer: await layerRuns(), loss: await lossRuns(Infinity) };
  const backend = await selectBackend('webgpu');
  if (backend.name !== 'webgpu') throw new Error(`webgpu not selected (${backend.name})`);
  const got: Partial<typeof ref> = {};
  const launches: Record<string, { programs: Launches; tfjsOps: Launches }> = {};
  launches.adamw = { programs: await countLaunches(async () => (got.adam = await adamRuns(true))), tfjsOps: await countLaunches(() => adamRuns(false)) };
  launches.sites = { programs: await countLaunches(async () => (got.sites = await siteRuns(false))), tfjsOps: await countLaunches(() => siteRuns(true)) };
  launches.monarch = { programs: await countLaunches(async () => (got.monarch = await monarchRuns())), tfjsOps: noLaunches() };
  launches.layer = { programs: await countLaunches(async () => (got.layer = await layerRuns())), tfjsOps: noLaunches() };
  got.loss = await lossRuns(7);
  const sumOfSquares: Record<string, { got: number; reference: number; relDiff: number }> = {};
  for (const [name, sizes] of Object.entries(SUMSQ_SETS)) {
    const arrays = sumSquaresInputs(sizes);
    const inputs = arrays.map((a) => tf.tensor1d(a));
    const total = sumOfSquaresWebgpu(inputs);
    const got = (await total.data())[0]!;
    tf.dispose([total, ...inputs]);
    const reference = sumSquaresReference(arrays);
    sumOfSquares[name] = { got, reference, relDiff: Number((Math.abs(got - reference) / reference).toExponential(2)) };
  }
  const sumOfSquaresWorst = Math.max(...Object.values(sumOfSquares).map((r) => r.relDiff));
  const results = {
    adamw: compareAll(got.adam!, ref.adam, ['p', 'm', 'v']),
    sites: compareAll(got.sites!, ref.sites, ['value', 'dW', 'dM', 'da', 'db']),
    monarch: compareAll(got.monarch!, ref.monarch, ['M', 'dB1', 'dB2']),
    layer: compareAll(got.layer!, ref.layer, ['value', 'grad 1', 'grad 2', 'observed']),
    lossInBlocks: compareAll(got.loss!, ref.loss, ['loss', 'd embed_tokens', 'd layers.2 down_proj', 'd norm']),
    sumOfSquares: { worst: sumOfSquaresWorst, cases: sumOfSquares },
  };
  const worst = Math.max(results.adamw.worst, results.sites.worst, results.monarch.worst, results.layer.worst, results.lossInBlocks.worst, sumOfSquaresWorst);
  // Summaries of the launch counts (per-program detail kept for the log).
  const counts = Object.fromEntries(Object.entries(launches).map(([k, v]) => [k, { programs: v.programs.count, tfjsOps: v.tfjsOps.count, byProgram: v.programs.byProgram }]));
  return { pass: worst <= KERNEL_TOLERANCE, tolerance: KERNEL_TOLERANCE, worstRelDiff: Number(worst.toExponential(2)), ...results, launches: counts };
}
