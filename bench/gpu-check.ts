/**
 * The GPU-path check (issues 3 and 6; results go to docs/gpu.md): on a machine with a GPU,
 * apex's own backend selection must pick `webgpu`, the forward pass on webgpu must match the
 * transformers float64 references of both fixtures as the cpu/wasm tests do, a few hundred
 * training steps on webgpu must follow the `cpu` backend's loss sequence within float
 * tolerance, and the training/eval throughput of the ~10M-parameter benchmark model is measured
 * on webgpu beside the same machine's single-threaded wasm.
 *
 * The pure-JavaScript cpu backend computes the same bits on every x86-64 machine with the same
 * Node, so its training run is precomputed here (`reference`, written to bench/gpu-reference.json)
 * and the GPU machine only re-runs it in parallel as a determinism check when time allows.
 *
 * Runs compiled (the GPU machine has no tsx): `scripts/gpu-check.sh prepare` builds it with
 * bench/tsconfig.gpu-check.json into .device/build, from the repository root:
 *
 *   node .device/build/bench/gpu-check.js all --out DIR [--budget 250] [--no-cpu-rerun]   every part, one child process each, time-bounded
 *   node .device/build/bench/gpu-check.js software --out DIR [--steps 200]   forward + training on a software adapter (no GPU needed)
 *   node .device/build/bench/gpu-check.js reference [--out bench/gpu-reference.json]
 *   node .device/build/bench/gpu-check.js part <name> '<json args>'       one part (prints one JSON line)
 */
import * as tf from '@tensorflow/tfjs';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { probeBackends, selectBackend } from '../src/model/backend.js';
import { generate } from '../src/model/generate.js';
import type { ModelSpec } from '../src/model/model-spec.js';
import { computeLogits, evaluateNll, type StreamedLayerActivations } from '../src/model/streaming-forward.js';
import { DEFAULT_RATIO } from '../src/ops/selection.js';
import { runAnalysis } from '../src/pipeline/analyze.js';
import type { SequenceSet } from '../src/train/data.js';
import { runStage } from '../src/train/stage.js';
import type { ApexSetting, StageMethod } from '../src/train/stage-options.js';
import { Rng } from '../src/util/rng.js';
import { FIXTURES, loadReference, maxAbsDiff, maxRelDiff, openModel } from '../test/model/helpers.js';
import { idSet, readAllF32, STORIES, storyChunks } from '../test/train/stage-fixtures.js';
import { launchCounter, partKernels } from './gpu-kernel-checks.js';
import { writeRandomCheckpoint, type RandomModelShape } from './random-checkpoint.js';

const SELF = fileURLToPath(import.meta.url);
/** The compiled tree (bench/, src/, test/) this script runs from: its digest ties a reference to the code that made it. */
const BUILD = dirname(dirname(SELF));
const REFERENCE_FILE = process.env.GPU_CHECK_REFERENCE ?? 'bench/gpu-reference.json';
const WORK = join(tmpdir(), 'apex-gpu-check');

/** Training comparison: stories260K, the reference stories cut into 16 chunks of 16 tokens, batch 4. */
const TRAIN = { chunk: 16, batchSize: 4, lr: 1e-3, seed: 0, steps: 200 };
// Knobs for a shorter second run on the device: webgpu training steps (checked on the loss prefix),
// speed steps, and parts to skip (GPU_CHECK_SKIP=forward,wasm).
const WEBGPU_TRAIN_STEPS = Number(process.env.GPU_CHECK_TRAIN_STEPS ?? TRAIN.steps);
const SPEED_STEPS = Number(process.env.GPU_CHECK_SPEED_STEPS ?? 13);
const SKIP = new Set((process.env.GPU_CHECK_SKIP ?? '').split(',').filter(Boolean));
const TRAIN_RUNS = [
  { key: 'vanilla', method: 'vanilla' },
  { key: 'apex-full', method: 'apex', setting: 'full' },
] as const satisfies readonly { key: string; method: StageMethod; setting?: ApexSetting }[];
/** Float tolerance for "equal to the cpu backend's loss": absolute, on losses of order 1–6. */
const LOSS_TOLERANCE = 1e-3;
/**
 * Steps over which that tolerance holds. Later, this run (a tiny model memorising 16 chunks at
 * lr 1e-3) amplifies float32 rounding: two correct CPU backends, wasm and cpu, part by up to
 * 7e-2 (vanilla) and 1e-1 (APEX full) in loss by step 200 (measured: at most 1.8e-5 over the
 * first 20 steps, 1.1e-4 over 40, 4.3e-4 over 60). Past these steps a backend passes when it
 * stays within SPREAD_FACTOR × wasm's own distance from cpu.
 */
const STRICT_STEPS = 40;
const SPREAD_FACTOR = 2;
const LOGIT_TOLERANCE = 1e-3;
const NLL_TOLERANCE = 1e-4;
const SUMSQ_TOLERANCE = 1e-4;
/** Values kept per trained tensor in the reference (evenly strided), besides its sum and sum of squares. */
const SAMPLES = 32;

/** The ~10M-parameter shape of bench/train.ts and bench/eval.ts. */
const SMALL: RandomModelShape = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 8192 };
const SMALL_DIR = join(WORK, 'small-10m-f32');
const SMALL_ANALYSIS = join(WORK, 'small-analysis');

// ---------------------------------------------------------------------------------------------
// small utilities

const t0 = Date.now();
function log(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${message}\n`);
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v.length === 0 ? NaN : v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

function round(x: number, digits = 4): number {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)) : x;
}

/** sha256 over the compiled src/ files (names and contents), so a reference made from other code is recognised. */
function buildDigest(): string {
  const h = createHash('sha256');
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.js')) h.update(relative(BUILD, path)).update(readFileSync(path));
    }
  };
  walk(join(BUILD, 'src'));
  return h.digest('hex').slice(0, 16);
}

function tfjsVersion(): string {
  return (tf.version as Record<string, string>)['tfjs'] ?? tf.version_core;
}

// ---------------------------------------------------------------------------------------------
// parts: each runs in its own process and returns plain JSON

/** a. What apex's own selection picks, every backend's probe, and the adapter's description. */
async function partBackend(): Promise<unknown> {
  const probes = await probeBackends();
  const selected = await selectBackend('auto');
  let adapter: unknown = null;
  if (probes.find((p) => p.name === 'webgpu')?.available) {
    try {
      const webgpu = (await import('webgpu')) as unknown as { create(o: string[]): { requestAdapter(o?: object): Promise<AdapterLike | null> } };
      const a = await webgpu.create([]).requestAdapter({ powerPreference: 'high-performance' });
      const info = a?.info ?? {};
      adapter = a && {
        vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
        isFallbackAdapter: a.isFallbackAdapter ?? null,
        features: a.features ? [...a.features].sort() : [],
        limits: a.limits ? { maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize, maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize } : null,
      };
    } catch (e) {
      adapter = { error: (e as Error).message };
    }
  }
  // apex reads results with dataSync() in many places; tfjs-backend-webgpu's readSync of a
  // GPU-resident tensor goes through OffscreenCanvas, which Node lacks. Record both ways.
  const readback = async (sync: boolean): Promise<string> => {
    const x = tf.matMul(tf.ones([64, 64]), tf.ones([64, 64]));
    try {
      const v = sync ? x.dataSync() : await x.data();
      return v[0] === 64 ? 'ok' : `wrong value ${v[0]}`;
    } catch (e) {
      return `failed: ${(e as Error).message}`;
    } finally {
      x.dispose();
    }
  };
  const readbacks = { async: await readback(false), sync: await readback(true) };
  return { selected, picksWebgpu: selected.name === 'webgpu', probes, adapter, readbacks, tfjs: tfjsVersion(), node: process.version };
}

interface AdapterLike {
  isFallbackAdapter?: boolean;
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
  features?: Iterable<string>;
  limits?: { maxBufferSize: number; maxStorageBufferBindingSize: number; maxComputeWorkgroupStorageSize: number };
}

/** b. The reference checks of test/model/reference-suite.ts, as numbers, on one backend. */
async function partForward(args: { backend: string }): Promise<unknown> {
  const backend = await selectBackend(args.backend as 'webgpu');
  const out: Record<string, unknown> = { backend: backend.name, detail: backend.detail };
  for (const name of FIXTURES) {
    const started = performance.now();
    const ref = await loadReference(name);
    const model = await openModel(`fixtures/${name}`);
    try {
      const logits = await computeLogits(model.source, ref.sequences.slice(0, 2));
      const V = model.spec.vocabSize;
      const got = new Float32Array(2 * ref.T * V);
      logits.forEach((l, b) => got.set(l, b * ref.T * V));
      const stats = deferredSumsqObserver(model.spec, ref.B);
      const nll = await evaluateNll(model.source, ref.sequences, { observe: stats.observe, returnTargetLogprobs: true, batchSize: 4 });
      await stats.collect();
      const lp = new Float32Array(ref.B * (ref.T - 1));
      nll.targetLogprobs!.forEach((l, b) => lp.set(l, b * (ref.T - 1)));
      const prompt = ref.sequences[0]!.subarray(0, ref.promptLen);
      const greedy = await generate(model.source, [prompt], { maxNewTokens: ref.greedyIds.length - ref.promptLen });
      const ids = Array.from(greedy.sequences[0]!);
      const r = {
        logitsMaxAbsDiff: maxAbsDiff(got, ref.logits),
        targetLogprobsMaxAbsDiff: maxAbsDiff(lp, ref.targetLogprobs),
        meanNll: nll.meanNll,
        meanNllDiff: Math.abs(nll.meanNll - ref.meanNll),
        headSumsqMaxRelErr: maxRelDiff(stats.head, ref.headSumsq),
        gateSumsqMaxRelErr: maxRelDiff(stats.gate, ref.gateSumsq),
        greedyIdsEqual: ids.length === ref.greedyIds.length && ids.every((v, i) => v === ref.greedyIds[i]),
        seconds: round((performance.now() - started) / 1000),
      };
      out[name] = {
        ...r,
        pass: r.logitsMaxAbsDiff <= LOGIT_TOLERANCE && r.targetLogprobsMaxAbsDiff <= LOGIT_TOLERANCE && r.meanNllDiff <= NLL_TOLERANCE &&
          r.headSumsqMaxRelErr <= SUMSQ_TOLERANCE && r.gateSumsqMaxRelErr <= SUMSQ_TOLERANCE && r.greedyIdsEqual,
      };
      log(`forward ${name} on ${backend.name}: ${JSON.stringify(out[name])}`);
    } finally {
      await model.checkpoint.close();
    }
  }
  return out;
}

/**
 * test/model/helpers.ts's sumsqObserver, reading its sums after the forward pass with `data()`:
 * a synchronous read of a GPU-resident tensor needs OffscreenCanvas on tfjs-backend-webgpu,
 * which Node does not have. The reference's head_sumsq [L, B, H] and gate_act_sumsq [L, B, I].
 */
function deferredSumsqObserver(spec: ModelSpec, B: number) {
  const H = spec.numHeads;
  const I = spec.intermediateSize;
  const head = new Float64Array(spec.numLayers * B * H);
  const gate = new Float64Array(spec.numLayers * B * I);
  const pending: { layer: number; seqs: number[]; hs: tf.Tensor; gs: tf.Tensor }[] = [];
  const observe = (a: StreamedLayerActivations) => {
    const [b, T] = a.attention.shape;
    const [hs, gs] = tf.tidy(() => [tf.sum(tf.square(tf.reshape(a.attention, [b!, T!, H, spec.headDim])), [1, 3]), tf.sum(tf.square(a.gate), 1)]);
    pending.push({ layer: a.layer, seqs: [...a.sequenceIndices], hs: tf.keep(hs!), gs: tf.keep(gs!) });
  };
  const collect = async () => {
    for (const p of pending.splice(0)) {
      const hs = await p.hs.data();
      const gs = await p.gs.data();
      tf.dispose([p.hs, p.gs]);
      p.seqs.forEach((seq, row) => {
        for (let h = 0; h < H; h++) head[(p.layer * B + seq) * H + h] = hs[row * H + h]!;
        for (let c = 0; c < I; c++) gate[(p.layer * B + seq) * I + c] = gs[row * I + c]!;
      });
    }
  };
  return { observe, collect, head, gate };
}

interface TensorSummary {
  n: number;
  sum: number;
  sumsq: number;
  stride: number;
  sample: number[];
}

interface TrainRecord {
  backend: string;
  steps: number;
  losses: number[];
  gradNorms: number[];
  weights: Record<string, TensorSummary>;
  seconds: number;
  medianStepMs: number;
  /**
   * The engine's tensors and bytes after the stage minus before it: 0 expected (a stage frees
   * what it made; test/train/stage-tensor-leak.test.ts checks cpu and wasm, this the webgpu path).
   */
  leftBehind: { tensors: number; bytes: number };
}

function summarize(values: Float32Array): TensorSummary {
  let sum = 0;
  let sumsq = 0;
  for (const v of values) {
    sum += v;
    sumsq += v * v;
  }
  const stride = Math.max(1, Math.floor(values.length / SAMPLES));
  const sample: number[] = [];
  for (let i = 0; i < values.length && sample.length < SAMPLES; i += stride) sample.push(values[i]!);
  return { n: values.length, sum, sumsq, stride, sample };
}

/** c. One training run on stories260K (the analysis of APEX runs always on cpu, so that the selection is the reference's). */
async function partTrain(args: { backend: string; key: string; steps?: number; recompute?: boolean }): Promise<TrainRecord> {
  const spec = TRAIN_RUNS.find((r) => r.key === args.key);
  if (!spec) throw new Error(`unknown training run '${args.key}'`);
  const steps = args.steps ?? TRAIN.steps;
  const data: SequenceSet = await storyChunks(TRAIN.chunk);
  mkdirSync(WORK, { recursive: true });
  const run = mkdtempSync(join(WORK, `train-${args.key}-${args.backend}-`));
  try {
    if (spec.method === 'apex') {
      await runAnalysis({ model: STORIES, output: join(run, 'analysis'), data, batchSize: TRAIN.batchSize, ratio: DEFAULT_RATIO, seed: TRAIN.seed, backend: 'cpu' });
    }
    const losses: number[] = [];
    const gradNorms: number[] = [];
    const stepMs: number[] = [];
    const started = performance.now();
    const before = tf.memory();
    await runStage({
      model: STORIES, modelDir: STORIES, run, stage: 1, method: spec.method, ...('setting' in spec ? { setting: spec.setting } : {}),
      train: data, steps, batchSize: TRAIN.batchSize, lr: TRAIN.lr, seed: TRAIN.seed, saveEvery: 0, backend: args.backend, expand: false,
      ...(args.recompute ? { recomputeActivations: true } : {}),
      onStep: (r) => {
        losses.push(r.loss);
        gradNorms.push(r.gradNorm);
        stepMs.push((1000 * TRAIN.batchSize * TRAIN.chunk) / r.tokensPerSecond);
        if (r.step % 50 === 0 || r.step === 1) log(`train ${args.key} on ${args.backend}: step ${r.step}/${steps} loss ${r.loss.toFixed(6)}`);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    const after = tf.memory();
    const leftBehind = { tensors: after.numTensors - before.numTensors, bytes: after.numBytes - before.numBytes };
    const weights: Record<string, TensorSummary> = {};
    for (const file of ['trained.safetensors', 'operators.safetensors']) {
      const path = join(run, 'stages/1', file);
      if (!existsSync(path)) continue;
      for (const [name, t] of await readAllF32(path)) weights[`${file}:${name}`] = summarize(t.values);
    }
    return { backend: tf.getBackend(), steps, losses, gradNorms, weights, seconds: round(seconds), medianStepMs: round(median(stepMs.slice(3))), leftBehind };
  } finally {
    rmSync(run, { recursive: true, force: true });
  }
}

/** Steps of each run of the recomputation check (a short pair: the same bits are expected at every step). */
const RECOMPUTE_STEPS = Number(process.env.GPU_CHECK_RECOMPUTE_STEPS ?? 20);

/**
 * Activation recomputation on webgpu: APEX `full` trained twice for the same steps, without and
 * with `recomputeActivations`; the losses and weights are expected bit for bit the same (they
 * are on cpu, wasm and webgpu over lavapipe: test/train/recompute-training.test.ts,
 * docs/reliability.md), and the step time says what recomputing costs on this GPU.
 */
async function recomputeCheck(limit: (seconds: number) => number): Promise<Record<string, unknown>> {
  const plain = await runPart('train', { backend: 'webgpu', key: 'apex-full', steps: RECOMPUTE_STEPS }, limit(60));
  const recomputed = await runPart('train', { backend: 'webgpu', key: 'apex-full', steps: RECOMPUTE_STEPS, recompute: true }, limit(60));
  const a = plain.result as TrainRecord | undefined;
  const b = recomputed.result as TrainRecord | undefined;
  if (!a || !b) return { ok: false, plain: a ? { ok: true } : plain, recomputed: b ? { ok: true } : recomputed };
  return {
    ok: true,
    steps: RECOMPUTE_STEPS,
    identical: JSON.stringify(a.losses) === JSON.stringify(b.losses) && JSON.stringify(a.gradNorms) === JSON.stringify(b.gradNorms) && JSON.stringify(a.weights) === JSON.stringify(b.weights),
    lossMaxAbsDiff: Math.max(...a.losses.map((l, i) => Math.abs(l - b.losses[i]!))),
    medianStepMs: { plain: a.medianStepMs, recomputed: b.medianStepMs },
  };
}

/**
 * Diagnosis of a training mismatch: two vanilla steps on stories260K with a checkpoint after
 * each; the AdamW first moments there are (1 − β1)·g1 and β1·m1 + (1 − β1)·g2, so comparing them
 * tensor by tensor between backends names the gradient that differs.
 */
async function partGrads(args: { backend: string }): Promise<Record<string, Record<string, number[]>>> {
  const data: SequenceSet = await storyChunks(TRAIN.chunk);
  mkdirSync(WORK, { recursive: true });
  const run = mkdtempSync(join(WORK, `grads-${args.backend}-`));
  try {
    await runStage({
      model: STORIES, modelDir: STORIES, run, stage: 1, method: 'vanilla',
      train: data, steps: 2, batchSize: TRAIN.batchSize, lr: TRAIN.lr, seed: TRAIN.seed, saveEvery: 1, keepCheckpoints: 5, backend: args.backend, expand: false,
    });
    const out: Record<string, Record<string, number[]>> = {};
    const dir = join(run, 'stages/1/checkpoints');
    for (const step of readdirSync(dir).sort()) {
      const tensors = await readAllF32(join(dir, step, 'tensors.safetensors'));
      out[step] = {};
      for (const [name, t] of tensors) if (name.startsWith('adam_m.') || name.startsWith('param.')) out[step]![name] = Array.from(t.values);
    }
    return out;
  } finally {
    rmSync(run, { recursive: true, force: true });
  }
}

/** Per tensor, the largest difference between two backends' moments, relative to the tensor's largest value. */
async function diagnoseGrads(budget: number): Promise<unknown> {
  const [gpu, cpu] = await Promise.all([runPart('grads', { backend: 'webgpu' }, budget), runPart('grads', { backend: 'cpu' }, budget)]);
  if (!gpu.ok || !cpu.ok) return { gpu: gpu.ok ? 'ok' : gpu, cpu: cpu.ok ? 'ok' : cpu };
  const a = gpu.result as Record<string, Record<string, number[]>>;
  const b = cpu.result as Record<string, Record<string, number[]>>;
  const rows: { step: string; tensor: string; relMax: number; absMax: number; scale: number }[] = [];
  for (const step of Object.keys(b)) {
    for (const [name, ref] of Object.entries(b[step]!)) {
      const got = a[step]?.[name];
      if (!got) continue;
      let absMax = 0;
      let scale = 0;
      for (let i = 0; i < ref.length; i++) {
        absMax = Math.max(absMax, Math.abs(got[i]! - ref[i]!));
        scale = Math.max(scale, Math.abs(ref[i]!));
      }
      rows.push({ step, tensor: name, relMax: absMax / Math.max(scale, 1e-30), absMax, scale });
    }
  }
  rows.sort((x, y) => y.relMax - x.relMax);
  return { worst: rows.slice(0, 25), count: rows.length };
}

/** The random 10M model, its analysis (wasm) for the APEX runs. */
async function partSpeedSetup(): Promise<unknown> {
  if (!existsSync(join(SMALL_DIR, 'config.json'))) await writeRandomCheckpoint(SMALL_DIR, SMALL, 'F32');
  if (!existsSync(join(SMALL_ANALYSIS, 'analysis', 'stats.safetensors'))) {
    rmSync(SMALL_ANALYSIS, { recursive: true, force: true });
    await runAnalysis({ model: SMALL_DIR, output: join(SMALL_ANALYSIS, 'analysis'), data: randomSet(2, 128), batchSize: 2, ratio: DEFAULT_RATIO, seed: 0, backend: 'wasm' });
  }
  return { model: SMALL_DIR, shape: SMALL };
}

/** B random sequences of T tokens starting with BOS (bench/train.ts's data). */
function randomSet(B: number, T: number): SequenceSet {
  const rng = new Rng(3);
  return idSet(Array.from({ length: B }, () => Int32Array.from({ length: T }, (_, i) => (i === 0 ? 1 : rng.nextInt(SMALL.vocab)))));
}

/**
 * The median of each field over the measured steps: how a webgpu step's wall time splits into
 * recording launches on the host, submitting, and waiting for reads (the device working through
 * its queue); `cpuMs` is the whole process's CPU time (the driver's threads included).
 */
function medianHost(steps: Record<string, number>[]): Record<string, number> {
  const keys = Object.keys(steps[0] ?? {});
  return Object.fromEntries(keys.map((k) => [k, round(median(steps.map((s) => s[k]!)))]));
}

/** d. Training throughput of the 10M model: median step time after warm-up, through runStage. */
async function partSpeed(args: { backend: string; key: string; batch: number; seqLen: number; steps: number; warmup: number }): Promise<unknown> {
  const spec = TRAIN_RUNS.find((r) => r.key === args.key)!;
  const run = mkdtempSync(join(WORK, `speed-${args.key}-${args.backend}-`));
  let counter: ReturnType<typeof launchCounter> | undefined;
  try {
    if (spec.method === 'apex') cpSync(join(SMALL_ANALYSIS, 'analysis'), join(run, 'analysis'), { recursive: true });
    const stepSeconds: number[] = [];
    const stepLaunches: number[] = [];
    // Per step on webgpu: host ms recording launches, submitting, awaiting reads, and process CPU ms.
    const stepHost: { recordMs: number; submits: number; submitMs: number; reads: number; readMs: number; cpuMs: number }[] = [];
    let firstLoss = NaN;
    const tokensPerStep = args.batch * args.seqLen;
    // On webgpu, the program launches of each step (what a step costs there, docs/gpu.md).
    await selectBackend(args.backend as 'webgpu');
    const gpu = tf.getBackend() === 'webgpu';
    const launches = (counter = launchCounter()).launches;
    let launchesBefore = 0;
    let hostBefore = { recordMs: 0, submits: 0, submitMs: 0, reads: 0, readMs: 0 };
    let cpuBefore = process.cpuUsage();
    const result = await runStage({
      model: SMALL_DIR, modelDir: SMALL_DIR, run, stage: 1, method: spec.method, ...('setting' in spec ? { setting: spec.setting } : {}),
      train: randomSet(args.batch, args.seqLen), steps: args.steps, batchSize: args.batch, lr: 1e-4, saveEvery: 0, backend: args.backend, expand: false,
      onStep: (r) => {
        if (r.step === 1) firstLoss = r.loss;
        stepSeconds.push(tokensPerStep / r.tokensPerSecond);
        stepLaunches.push(launches.count - launchesBefore);
        launchesBefore = launches.count;
        const cpu = process.cpuUsage(cpuBefore);
        cpuBefore = process.cpuUsage();
        const { recordMs, submits, submitMs, reads, readMs } = launches;
        stepHost.push({ recordMs: recordMs - hostBefore.recordMs, submits: submits - hostBefore.submits, submitMs: submitMs - hostBefore.submitMs, reads: reads - hostBefore.reads, readMs: readMs - hostBefore.readMs, cpuMs: (cpu.user + cpu.system) / 1000 });
        hostBefore = { recordMs, submits, submitMs, reads, readMs };
        log(`speed ${args.key} ${args.batch}x${args.seqLen} on ${args.backend}: step ${r.step} ${(1000 * stepSeconds.at(-1)!).toFixed(0)} ms`);
      },
    });
    const s = median(stepSeconds.slice(args.warmup));
    return {
      backend: tf.getBackend(), method: args.key, batch: args.batch, seqLen: args.seqLen, measuredSteps: stepSeconds.length - args.warmup,
      msPerStep: round(1000 * s), tokensPerSecond: round(tokensPerStep / s), firstStepMs: round(1000 * stepSeconds[0]!), firstLoss,
      ...(gpu ? { launchesPerStep: median(stepLaunches.slice(args.warmup)), hostPerStep: medianHost(stepHost.slice(args.warmup)) } : {}),
      trainable: result.trainable.trainable, peakRssBytes: result.peakRssBytes,
    };
  } finally {
    counter?.stop();
    rmSync(run, { recursive: true, force: true });
  }
}

/** d. Forward (eval) throughput of the 10M model: evaluateNll with weights streamed from disk, best of `repeats` after one warm-up. */
async function partEvalSpeed(args: { backend: string; batch: number; seqLen: number; repeats: number }): Promise<unknown> {
  const backend = await selectBackend(args.backend as 'webgpu');
  const model = await openModel(SMALL_DIR);
  try {
    const seqs = randomSet(args.batch, args.seqLen).sequences;
    const times: number[] = [];
    let nll = NaN;
    for (let i = 0; i <= args.repeats; i++) {
      const started = performance.now();
      nll = (await evaluateNll(model.source, seqs, { batchSize: args.batch })).meanNll;
      times.push((performance.now() - started) / 1000);
      log(`eval ${args.batch}x${args.seqLen} on ${backend.name}: ${(1000 * times.at(-1)!).toFixed(0)} ms`);
    }
    const best = Math.min(...times.slice(1));
    const tokens = args.batch * (args.seqLen - 1);
    return { backend: backend.name, batch: args.batch, seqLen: args.seqLen, coldSeconds: round(times[0]!), bestSeconds: round(best), tokensPerSecond: round(tokens / best), meanNll: nll };
  } finally {
    await model.checkpoint.close();
  }
}

const PARTS: Record<string, (args: never) => Promise<unknown>> = {
  backend: partBackend,
  forward: partForward,
  kernels: partKernels,
  train: partTrain,
  grads: partGrads,
  'speed-setup': partSpeedSetup,
  speed: partSpeed,
  eval: partEvalSpeed,
};

// ---------------------------------------------------------------------------------------------
// comparison of a training run with the cpu reference

interface Reference {
  buildDigest: string;
  node: string;
  tfjs: string;
  train: typeof TRAIN;
  runs: Record<string, TrainRecord>;
  /** The same runs on wasm: how far two correct float32 backends part (compareTraining's spread). */
  wasmRuns?: Record<string, TrainRecord>;
}

/**
 * `got` against the cpu run `ref`; `spread` is another correct backend's run (wasm) of the same
 * training, whose distance from `ref` is the float noise the comparison allows past STRICT_STEPS.
 */
function compareTraining(got: TrainRecord, ref: TrainRecord, spread?: TrainRecord): Record<string, unknown> {
  const n = Math.min(got.losses.length, ref.losses.length);
  let lossMax = 0;
  let lossAt = 0;
  let strictMax = 0;
  let normRel = 0;
  for (let i = 0; i < n; i++) {
    const d = Math.abs(got.losses[i]! - ref.losses[i]!);
    if (!(d <= lossMax)) { lossMax = d; lossAt = i + 1; }
    if (i < STRICT_STEPS && !(d <= strictMax)) strictMax = d;
    normRel = Math.max(normRel, Math.abs(got.gradNorms[i]! - ref.gradNorms[i]!) / Math.max(ref.gradNorms[i]!, 1e-12));
  }
  let sampleMax = 0;
  let normRelMax = 0;
  const missing: string[] = [];
  for (const [name, r] of Object.entries(ref.weights)) {
    const g = got.weights[name];
    if (!g || g.n !== r.n) { missing.push(name); continue; }
    sampleMax = Math.max(sampleMax, maxAbsDiff(g.sample, r.sample));
    normRelMax = Math.max(normRelMax, Math.abs(Math.sqrt(g.sumsq) - Math.sqrt(r.sumsq)) / Math.max(Math.sqrt(r.sumsq), 1e-12));
  }
  const at = (k: number) => (k <= n ? { step: k, got: got.losses[k - 1], ref: ref.losses[k - 1] } : null);
  let wasmSpread: number | undefined;
  if (spread && spread.losses.length >= n) {
    wasmSpread = 0;
    for (let i = 0; i < n; i++) wasmSpread = Math.max(wasmSpread, Math.abs(spread.losses[i]! - ref.losses[i]!));
  }
  // Without a wasm run to measure the noise, every step is held to the strict tolerance.
  const allowed = n <= STRICT_STEPS ? LOSS_TOLERANCE : wasmSpread === undefined ? LOSS_TOLERANCE : Math.max(LOSS_TOLERANCE, SPREAD_FACTOR * wasmSpread);
  return {
    steps: n,
    lossMaxAbsDiff: lossMax,
    lossMaxAbsDiffAtStep: lossAt,
    lossMaxAbsDiffFirstSteps: { steps: Math.min(n, STRICT_STEPS), value: strictMax, tolerance: LOSS_TOLERANCE },
    wasmVsCpuLossMaxAbsDiff: wasmSpread ?? null,
    lossToleranceAllSteps: allowed,
    lossFirst: at(1),
    lossLast: at(n),
    gradNormMaxRelDiff: normRel,
    weightsSampledMaxAbsDiff: sampleMax,
    weightsNormMaxRelDiff: normRelMax,
    tensors: Object.keys(ref.weights).length,
    missingTensors: missing,
    identical: lossMax === 0 && sampleMax === 0 && normRelMax === 0,
    // A shorter run (GPU_CHECK_TRAIN_STEPS) is checked on its loss prefix; weights only after the whole run.
    pass: n === got.losses.length && strictMax <= LOSS_TOLERANCE && lossMax <= allowed && (n < ref.losses.length || missing.length === 0),
  };
}

// ---------------------------------------------------------------------------------------------
// child processes, time-bounded

interface PartOutcome {
  ok: boolean;
  seconds: number;
  result?: unknown;
  error?: string;
  timedOut?: boolean;
  skipped?: string;
}

function runPart(name: string, args: object, limitSeconds: number): Promise<PartOutcome> {
  const started = performance.now();
  if (limitSeconds < 5) return Promise.resolve({ ok: false, seconds: 0, skipped: 'no time left in the budget' });
  const label = `${name}${Object.keys(args).length ? ` ${JSON.stringify(args)}` : ''}`;
  log(`start ${label} (limit ${limitSeconds.toFixed(0)} s)`);
  return new Promise((done) => {
    const child = spawn(process.execPath, [SELF, 'part', name, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderrTail = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const text = d.toString();
      stderrTail = (stderrTail + text).slice(-2000);
      // Dawn's harmless "XDG_RUNTIME_DIR is invalid" and the like go to the log as they come.
      process.stderr.write(text.replace(/^(?=.)/gm, `  | `));
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitSeconds * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const seconds = round((performance.now() - started) / 1000);
      const line = stdout.trim().split('\n').pop() ?? '';
      let parsed: { ok: boolean; result?: unknown; error?: string } | undefined;
      try {
        parsed = JSON.parse(line) as typeof parsed;
      } catch {
        parsed = undefined;
      }
      const outcome: PartOutcome = timedOut
        ? { ok: false, seconds, timedOut: true, error: `killed after ${limitSeconds.toFixed(0)} s` }
        : parsed
          ? { ...parsed, seconds }
          : { ok: false, seconds, error: `exit ${code}: ${stderrTail.trim().split('\n').slice(-3).join(' / ')}` };
      log(`end ${label}: ${outcome.ok ? 'ok' : `FAILED (${outcome.error})`} in ${seconds} s`);
      done(outcome);
    });
  });
}

async function childMain(name: string, rawArgs: string): Promise<void> {
  const fn = PARTS[name];
  if (!fn) throw new Error(`unknown part '${name}' (${Object.keys(PARTS).join(', ')})`);
  let line: string;
  try {
    line = JSON.stringify({ ok: true, result: await fn(JSON.parse(rawArgs || '{}') as never) });
  } catch (e) {
    line = JSON.stringify({ ok: false, error: (e as Error).stack ?? String(e) });
  }
  // Dawn keeps the event loop alive: leave once the line is out (a pipe write is asynchronous).
  process.stdout.write(`${line}\n`, () => process.exit(0));
}

function readReference(): Reference | undefined {
  return existsSync(REFERENCE_FILE) ? (JSON.parse(readFileSync(REFERENCE_FILE, 'utf8')) as Reference) : undefined;
}

/** Every part within `budget` seconds: the GPU lane in order of importance, the CPU-only lane beside it. */
async function all(outDir: string, budget: number, cpuRerun: boolean): Promise<void> {
  const deadline = performance.now() + budget * 1000;
  const left = (limit: number) => Math.min(limit, (deadline - performance.now()) / 1000 - 3);
  const results: Record<string, unknown> = {
    started: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model}`,
    node: process.version,
    buildDigest: buildDigest(),
    budgetSeconds: budget,
    tolerances: { logits: LOGIT_TOLERANCE, meanNll: NLL_TOLERANCE, sumsqRel: SUMSQ_TOLERANCE, trainingLoss: LOSS_TOLERANCE },
  };
  const save = () => writeFileSync(join(outDir, 'gpu-check.json'), `${JSON.stringify(results, null, 2)}\n`);
  mkdirSync(outDir, { recursive: true });
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  const reference = readReference();
  results.reference = reference
    ? { file: REFERENCE_FILE, buildDigest: reference.buildDigest, sameBuild: reference.buildDigest === results.buildDigest, node: reference.node, train: reference.train }
    : { file: REFERENCE_FILE, missing: true };
  save();

  // CPU-only lanes beside the GPU lane (16 cores there; every tfjs backend here is single-threaded):
  // the same machine's wasm throughput, and the committed cpu reference re-made on this machine
  // (same bits expected: pure JavaScript, same Node binary).
  const cpuLane: Record<string, unknown> = {};
  results.cpuLanes = cpuLane;
  const cpuReruns = (cpuRerun ? TRAIN_RUNS : []).map(async (r) => {
    const outcome = await runPart('train', { backend: 'cpu', key: r.key }, left(budget));
    const rec = outcome.result as TrainRecord | undefined;
    cpuLane[`cpuTrain-${r.key}`] = rec && reference?.runs[r.key]
      ? { ok: true, seconds: outcome.seconds, runSeconds: rec.seconds, medianStepMs: rec.medianStepMs, vsReference: compareTraining(rec, reference.runs[r.key]!) }
      : { ...outcome, result: undefined };
    save();
  });

  const backend = await runPart('backend', {}, left(40));
  results.backend = backend;
  save();
  // A failed backend part is no proof that webgpu is missing: then the GPU parts try anyway (each fails fast if it is).
  const gpu = !backend.ok || (backend.result as { probes: { name: string; available: boolean }[] }).probes.some((p) => p.name === 'webgpu' && p.available);
  if (!gpu) log('webgpu unavailable: the GPU parts are skipped; the CPU-only parts still run');
  const skipGpu: PartOutcome = { ok: false, seconds: 0, skipped: 'webgpu unavailable' };

  const setup = await runPart('speed-setup', {}, left(60));
  results.speedSetup = setup;
  save();

  const wasmLane = (async () => {
    if (!setup.ok || SKIP.has('wasm')) return;
    cpuLane.wasmTrainVanilla = await runPart('speed', { backend: 'wasm', key: 'vanilla', batch: 2, seqLen: 128, steps: 5, warmup: 2 }, left(60));
    cpuLane.wasmTrainApexFull = await runPart('speed', { backend: 'wasm', key: 'apex-full', batch: 2, seqLen: 128, steps: 5, warmup: 2 }, left(60));
    cpuLane.wasmEval = await runPart('eval', { backend: 'wasm', batch: 2, seqLen: 128, repeats: 2 }, left(40));
    save();
  })();
  const gpuLane = (async () => {
    results.forward = gpu && !SKIP.has('forward') ? await runPart('forward', { backend: 'webgpu' }, left(60)) : { ok: false, seconds: 0, skipped: gpu ? 'GPU_CHECK_SKIP' : 'webgpu unavailable' };
    save();
    results.kernels = gpu && !SKIP.has('kernels') ? await runPart('kernels', {}, left(60)) : { ok: false, seconds: 0, skipped: gpu ? 'GPU_CHECK_SKIP' : 'webgpu unavailable' };
    save();
    const training: Record<string, unknown> = {};
    results.training = training;
    if (gpu && process.env.GPU_CHECK_GRADS === '1') {
      results.grads = await diagnoseGrads(left(90));
      save();
    }
    for (const r of SKIP.has('train') ? [] : TRAIN_RUNS) {
      const outcome = gpu ? await runPart('train', { backend: 'webgpu', key: r.key, steps: WEBGPU_TRAIN_STEPS }, left(90)) : skipGpu;
      const rec = outcome.result as TrainRecord | undefined;
      training[r.key] = rec
        ? {
            ok: true, seconds: outcome.seconds, backend: rec.backend, runSeconds: rec.seconds, medianStepMs: rec.medianStepMs, leftBehind: rec.leftBehind,
            losses: rec.losses.map((l) => round(l, 7)),
            vsCpuReference: reference?.runs[r.key] ? compareTraining(rec, reference.runs[r.key]!, reference.wasmRuns?.[r.key]) : 'no reference',
          }
        : outcome;
      save();
    }
    const speed: Record<string, unknown> = {};
    results.speed = speed;
    for (const [batch, seqLen] of SKIP.has('speed') ? [] : ([[2, 128], [8, 256]] as const)) {
      for (const r of TRAIN_RUNS) {
        speed[`train-${r.key}-${batch}x${seqLen}`] = gpu && setup.ok ? await runPart('speed', { backend: 'webgpu', key: r.key, batch, seqLen, steps: SPEED_STEPS, warmup: 2 }, left(45)) : skipGpu;
        save();
      }
    }
    for (const [batch, seqLen] of SKIP.has('speed') ? [] : ([[2, 128], [8, 256]] as const)) {
      speed[`eval-${batch}x${seqLen}`] = gpu && setup.ok ? await runPart('eval', { backend: 'webgpu', batch, seqLen, repeats: 3 }, left(30)) : skipGpu;
      save();
    }
    // Last (the least important part): activation recomputation, the same bits on the GPU.
    results.recompute = gpu && !SKIP.has('recompute') ? await recomputeCheck(left) : skipGpu;
    save();
  })();

  await Promise.all([gpuLane, wasmLane, ...cpuReruns]);
  results.summary = summary(results);
  results.finished = new Date().toISOString();
  results.seconds = round((budget * 1000 - (deadline - performance.now())) / 1000);
  save();
  log(`results in ${join(outDir, 'gpu-check.json')}`);
}

/** The verdicts and headline numbers of a finished `all`, for docs/gpu.md. */
function summary(results: Record<string, unknown>): Record<string, unknown> {
  const get = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), results);
  const out: Record<string, unknown> = {
    selectedBackend: get('backend.result.selected.name') ?? null,
    readbacks: get('backend.result.readbacks') ?? null,
    adapter: get('backend.result.adapter.description') ?? get('backend.result.selected.detail') ?? null,
    // What bounds one tensor on webgpu (webgpu-binding-limit.ts, model-loss.ts).
    maxStorageBufferBindingSize: get('backend.result.adapter.limits.maxStorageBufferBindingSize') ?? null,
    maxBufferSize: get('backend.result.adapter.limits.maxBufferSize') ?? null,
  };
  for (const name of FIXTURES) out[`forward-${name}`] = get(`forward.result.${name}.pass`) ?? get('forward.skipped') ?? get('forward.error') ?? null;
  out['kernels-vs-cpu'] = get('kernels.result.pass') ?? get('kernels.skipped') ?? get('kernels.error') ?? null;
  out['kernels-worst-rel-diff'] = get('kernels.result.worstRelDiff') ?? null;
  for (const r of TRAIN_RUNS) {
    out[`train-${r.key}-vs-cpu`] = get(`training.${r.key}.vsCpuReference.pass`) ?? get(`training.${r.key}.skipped`) ?? get(`training.${r.key}.error`) ?? null;
    out[`train-${r.key}-loss-max-abs-diff`] = get(`training.${r.key}.vsCpuReference.lossMaxAbsDiff`) ?? null;
    out[`cpu-rerun-${r.key}-identical-to-reference`] = get(`cpuLanes.cpuTrain-${r.key}.vsReference.identical`) ?? null;
    // Tensors a webgpu stage left on the engine (0 expected).
    out[`train-${r.key}-tensors-left`] = get(`training.${r.key}.leftBehind.tensors`) ?? null;
  }
  const speed = (get('speed') ?? {}) as Record<string, PartOutcome>;
  for (const [k, v] of Object.entries(speed)) {
    out[`webgpu-${k}-tokens-per-s`] = (v.result as { tokensPerSecond?: number } | undefined)?.tokensPerSecond ?? null;
    if (k.startsWith('train-')) {
      const r = v.result as { launchesPerStep?: number; hostPerStep?: Record<string, number> } | undefined;
      out[`webgpu-${k}-launches-per-step`] = r?.launchesPerStep ?? null;
      // Where a step's time goes: host ms recording launches, awaiting reads, CPU ms (docs/gpu.md).
      out[`webgpu-${k}-host-per-step`] = r?.hostPerStep ?? null;
    }
  }
  for (const k of ['wasmTrainVanilla', 'wasmTrainApexFull', 'wasmEval']) out[`${k}-tokens-per-s`] = get(`cpuLanes.${k}.result.tokensPerSecond`) ?? null;
  out['recompute-identical'] = get('recompute.identical') ?? get('recompute.skipped') ?? get('recompute.error') ?? null;
  out['recompute-median-step-ms'] = get('recompute.medianStepMs') ?? null;
  return out;
}

/**
 * The checks that need no real GPU, on a software WebGPU adapter (Mesa's lavapipe, through the
 * same Dawn and tfjs-backend-webgpu code): forward against the references, apex's webgpu
 * programs against cpu (part `kernels`), the launches per training step of the 10M model, and
 * every training run on webgpu against the cpu backend's, step by step. Slow (lavapipe emulates the GPU on the
 * CPU) but it runs the webgpu code path anywhere; `scripts/gpu-check.sh software` installs
 * lavapipe and runs it. The cpu runs come from bench/gpu-reference.json when it was made by
 * this build for the same number of steps, and are made beside the webgpu runs otherwise.
 */
async function software(outDir: string, steps: number): Promise<void> {
  const results: Record<string, unknown> = {
    started: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model}`,
    node: process.version,
    tfjs: tfjsVersion(),
    buildDigest: buildDigest(),
    steps,
    tolerances: { logits: LOGIT_TOLERANCE, meanNll: NLL_TOLERANCE, sumsqRel: SUMSQ_TOLERANCE, trainingLoss: LOSS_TOLERANCE },
  };
  mkdirSync(outDir, { recursive: true });
  const save = () => writeFileSync(join(outDir, 'webgpu-software-check.json'), `${JSON.stringify(results, null, 2)}\n`);
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  results.backend = await runPart('backend', {}, 120);
  save();
  const committed = readReference();
  const reusable = committed !== undefined && committed.buildDigest === results.buildDigest && committed.train.steps === steps;
  results.reference = reusable ? { file: REFERENCE_FILE, buildDigest: committed.buildDigest } : { madeHere: true, reason: committed ? 'different build or step count' : 'missing' };
  const made = reusable && committed.wasmRuns ? { runs: committed.runs, wasmRuns: committed.wasmRuns } : await referenceRuns(steps);
  results.forward = await runPart('forward', { backend: 'webgpu' }, 600);
  save();
  results.kernels = await runPart('kernels', {}, 900);
  save();
  // Launches per training step of the 10M model (2 × 128; 3 steps, the last 2 counted): the cost
  // model of a real GPU, which lavapipe's times do not show.
  if (!SKIP.has('speed') && (await runPart('speed-setup', {}, 600)).ok) {
    const speed: Record<string, unknown> = {};
    results.speed = speed;
    for (const r of TRAIN_RUNS) speed[`train-${r.key}-2x128`] = await runPart('speed', { backend: 'webgpu', key: r.key, batch: 2, seqLen: 128, steps: 3, warmup: 1 }, 900);
    save();
  }
  const training: Record<string, unknown> = {};
  results.training = training;
  const webgpuRuns: Record<string, TrainRecord | undefined> = {};
  for (const r of TRAIN_RUNS) {
    const outcome = await runPart('train', { backend: 'webgpu', key: r.key, steps }, 3600);
    webgpuRuns[r.key] = outcome.result as TrainRecord | undefined;
    training[r.key] = outcome.ok ? { ok: true, seconds: outcome.seconds, medianStepMs: webgpuRuns[r.key]!.medianStepMs, leftBehind: webgpuRuns[r.key]!.leftBehind } : outcome;
    save();
  }
  for (const r of TRAIN_RUNS) {
    const got = webgpuRuns[r.key];
    if (got) {
      training[r.key] = {
        ...(training[r.key] as object),
        losses: got.losses.map((l) => round(l, 7)),
        cpuLosses: made.runs[r.key]!.losses.map((l) => round(l, 7)),
        wasmLosses: made.wasmRuns[r.key]!.losses.map((l) => round(l, 7)),
        vsCpu: compareTraining(got, made.runs[r.key]!, made.wasmRuns[r.key]),
      };
    }
  }
  if (!SKIP.has('recompute')) {
    results.recompute = await recomputeCheck(() => 3600);
    save();
  }
  // The lanes this mode does not run (speed, wasm, cpu re-runs) are left out of its summary.
  results.summary = Object.fromEntries(Object.entries(summary(results)).filter(([, v]) => v !== null));
  for (const r of TRAIN_RUNS) {
    (results.summary as Record<string, unknown>)[`train-${r.key}-vs-cpu`] = (training[r.key] as { vsCpu?: { pass: boolean } }).vsCpu?.pass ?? false;
    (results.summary as Record<string, unknown>)[`train-${r.key}-loss-max-abs-diff`] = (training[r.key] as { vsCpu?: { lossMaxAbsDiff: number } }).vsCpu?.lossMaxAbsDiff ?? null;
  }
  results.finished = new Date().toISOString();
  save();
  log(`results in ${join(outDir, 'webgpu-software-check.json')}: ${JSON.stringify(results.summary)}`);
}

/** Every training run on cpu (the reference) and on wasm (its float noise), two processes at a time. */
async function referenceRuns(steps: number): Promise<{ runs: Record<string, TrainRecord>; wasmRuns: Record<string, TrainRecord> }> {
  const runs: Record<string, TrainRecord> = {};
  const wasmRuns: Record<string, TrainRecord> = {};
  for (const [backend, into] of [['cpu', runs], ['wasm', wasmRuns]] as const) {
    const outcomes = await Promise.all(TRAIN_RUNS.map((r) => runPart('train', { backend, key: r.key, steps }, 3600)));
    outcomes.forEach((o, i) => {
      if (!o.ok) throw new Error(`reference run ${TRAIN_RUNS[i]!.key} on ${backend} failed: ${o.error ?? o.skipped ?? 'timed out'}`);
      into[TRAIN_RUNS[i]!.key] = o.result as TrainRecord;
    });
  }
  return { runs, wasmRuns };
}

/** The cpu backend's training runs, written as the reference the GPU machine compares with (two processes at once). */
async function reference(out: string, steps: number): Promise<void> {
  const { runs, wasmRuns } = await referenceRuns(steps);
  const ref: Reference & Record<string, unknown> = {
    about: 'cpu-backend training runs of bench/gpu-check.ts (stories260K); made by `scripts/gpu-check.sh prepare`',
    created: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model}`,
    node: process.version,
    tfjs: tfjsVersion(),
    buildDigest: buildDigest(),
    train: { ...TRAIN, steps },
    runs,
    wasmRuns,
  };
  writeFileSync(out, `${JSON.stringify(ref)}\n`);
  log(`reference written to ${out}: ${Object.entries(runs).map(([k, r]) => `${k} ${r.steps} steps in ${r.seconds} s, final loss ${r.losses.at(-1)}`).join('; ')}`);
}

async function main(argv: string[]): Promise<void> {
  const opt = (name: string, fallback: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1]! : fallback;
  };
  switch (argv[0]) {
    case 'part':
      return childMain(argv[1]!, argv[2] ?? '{}');
    case 'all':
      return all(opt('--out', join(WORK, 'out')), Number(opt('--budget', '250')), !argv.includes('--no-cpu-rerun'));
    case 'digest':
      process.stdout.write(`${buildDigest()}\n`);
      return;
    case 'software':
      return software(opt('--out', join(WORK, 'software')), Number(opt('--steps', String(TRAIN.steps))));
    case 'reference':
      return reference(opt('--out', REFERENCE_FILE), Number(opt('--steps', String(TRAIN.steps))));
    default:
      throw new Error('usage: gpu-check.js all --out DIR [--budget S] [--no-cpu-rerun] | software --out DIR [--steps N] | reference [--out FILE] [--steps N] | digest | part NAME JSON');
  }
}

await main(process.argv.slice(2));
