/**
 * Training benchmark (results go to docs/benchmarks.md, "Training"): one optimizer step of a
 * ~10M-parameter LLaMA (8 layers, hidden 256, GQA 8/4 heads, I 688, vocab 8192, untied, f32,
 * random weights; the shape bench/eval.ts uses) on 2 × 128 tokens, through apex's trainer
 * (`runStage`, wasm backend) for every method and setting, next to PyTorch CPU running the same
 * full fine-tuning step on the same weights and tokens (bench/pytorch/train_step.py, set up as
 * docs/benchmarks.md says: OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=2). Reports the median step time
 * after warm-up, tokens/s, the APEX `full` overhead per step over `vanilla` (target ≤ 5%), and
 * the peak RSS of each setting beside the trainer's memory estimate. Each measurement runs in
 * a fresh child process so that its peak RSS is its own.
 *
 *   npx tsx bench/train.ts [--work /tmp/apex-train-bench] [--steps 10] [--python /usr/bin/python3] [--only vanilla,full,…] [--batch 2] [--seq-len 128] [--grad-accum 1] [--rounds 1]
 *   npx tsx bench/train.ts --paired 30 [--batch 2] [--seq-len 128] [--grad-accum 1]   (APEX full overhead only: vanilla and full in one process, steps alternating)
 *   npx tsx bench/train.ts paired-worker <model> <vanilla-run> <apex-run> <steps> <ids>
 *   npx tsx bench/train.ts worker <model> <run> <method> <setting|-> <backend> <steps>   (one measurement)
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { i32Tensor, writeSafetensors } from '../src/io/safetensors-writer.js';
import { runAnalysis } from '../src/pipeline/analyze.js';
import { SafetensorsFile } from '../src/io/safetensors-reader.js';
import { readInputIds } from '../src/train/data-input-ids.js';
import type { SequenceSet } from '../src/train/data.js';
import { runStage } from '../src/train/stage.js';
import type { ApexSetting, StageMethod } from '../src/train/stage-options.js';
import { Rng } from '../src/util/rng.js';
import { writeRandomCheckpoint, type RandomModelShape } from './random-checkpoint.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SMALL: RandomModelShape = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 8192 };
// Micro-batch shape: --batch / --seq-len on the command line, handed to the workers by environment.
const BATCH = Number(process.env.APEX_BENCH_BATCH ?? 2);
/** Micro-batches per optimizer step (--grad-accum). */
const ACCUM = Number(process.env.APEX_BENCH_ACCUM ?? 1);
const SEQ_LEN = Number(process.env.APEX_BENCH_SEQ_LEN ?? 128);
const WARMUP = 3;

interface WorkerResult {
  msPerStep: number;
  /** CPU milliseconds of the process per step (load-independent on this single-threaded backend). */
  cpuMsPerStep: number;
  tokensPerSecond: number;
  firstLoss: number;
  trainable: number;
  fraction: number;
  peakRssBytes: number;
  memoryEstimateBytes: number;
}

async function idSet(file: string): Promise<SequenceSet> {
  const { rows, length } = await readInputIds(file);
  return { seqLen: length, sequences: rows, source: { kind: 'input-ids', paths: [file], sha256: [], seqLen: length, seed: 0, split: 'all', heldoutFraction: 0.05, splitSeed: 0, documents: rows.length, sequences: rows.length, tokens: rows.length * length } };
}

async function worker(model: string, run: string, method: StageMethod, setting: string, backend: string, steps: number, ids: string): Promise<void> {
  const seconds: number[] = [];
  const cpu: number[] = [];
  let lastCpu = process.cpuUsage();
  let firstLoss = NaN;
  const result = await runStage({
    model, modelDir: model, run, stage: 1, method, ...(setting !== '-' ? { setting: setting as ApexSetting } : {}),
    ...(method === 'lora' ? { loraRank: 8 } : {}),
    train: await idSet(ids), steps, batchSize: BATCH, gradAccum: ACCUM, lr: 1e-4, saveEvery: 0, backend, expand: false,
    onStep: (r) => {
      if (r.step === 1) firstLoss = r.loss;
      seconds.push((ACCUM * BATCH * SEQ_LEN) / r.tokensPerSecond);
      const now = process.cpuUsage(lastCpu);
      cpu.push((now.user + now.system) / 1000);
      lastCpu = process.cpuUsage();
    },
  });
  const middle = (v: number[]) => v.slice(WARMUP).sort((a, b) => a - b)[Math.floor((v.length - WARMUP) / 2)]!;
  const median = middle(seconds);
  const out: WorkerResult = {
    msPerStep: median * 1000,
    cpuMsPerStep: middle(cpu), tokensPerSecond: (ACCUM * BATCH * SEQ_LEN) / median, firstLoss, trainable: result.trainable.trainable, fraction: result.trainable.fraction,
    peakRssBytes: result.peakRssBytes, memoryEstimateBytes: result.memoryEstimateBytes,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/** Strict turn-taking between two runs in one process: a run's onStep hands the turn over and waits for it back. */
class Turns {
  private turn = 0;
  private readonly waiting = new Map<number, () => void>();
  pass(to: number): void {
    this.turn = to;
    const wake = this.waiting.get(to);
    this.waiting.delete(to);
    wake?.();
  }
  async wait(who: number): Promise<void> {
    if (this.turn !== who) await new Promise<void>((resolve) => this.waiting.set(who, resolve));
  }
}

interface PairedResult {
  /** Per step after warm-up: [vanilla, apex full] CPU ms and wall ms, the two steps run back to back. */
  cpu: [number, number][];
  wall: [number, number][];
}

/**
 * Multiply-adds of one training step (forward, and the backward's two products per forward
 * product) of `vanilla` on SMALL, and what APEX `full` adds with the operators of `operatorsFile`
 * (from their shapes): per mixing site three products of n × n by n × (weight lines' length)
 * (M·W_P forward; Mᵀ·dN and dN·W_Pᵀ backward; the o_proj site once per query-head slot), and M
 * built from its factors (n²·bs forward, twice that backward). Arithmetic only: what the
 * overhead would be if APEX's products ran as efficiently as everything `vanilla` does.
 */
async function stepArithmetic(operatorsFile: string): Promise<{ vanilla: number; apex: number }> {
  const { layers: L, hidden: H, heads, kvHeads, intermediate: I, vocab: V } = SMALL;
  const d = H / heads;
  const tokens = ACCUM * BATCH * SEQ_LEN;
  const linearWeights = L * (H * heads * d + 2 * H * kvHeads * d + heads * d * H + 3 * H * I) + V * H;
  const attention = L * 3 * 2 * ACCUM * BATCH * heads * SEQ_LEN * SEQ_LEN * d;
  const file = await SafetensorsFile.open(operatorsFile);
  let apex = 0;
  try {
    for (const t of file.header.tensors.filter((x) => x.name.endsWith('.apex.B1'))) {
      const [nb, bs] = t.shape as [number, number, number];
      const n = nb * bs;
      // Lines of H values: v rows and o columns (heads/kvHeads slots) for heads; gate, up rows and down columns for channels.
      const lines = t.name.includes('.mlp.') ? 3 : 1 + heads / kvHeads;
      apex += lines * 3 * n * n * H + 3 * n * n * bs;
    }
  } finally {
    await file.close();
  }
  return { vanilla: 3 * linearWeights * tokens + attention, apex };
}

/**
 * vanilla and APEX `full` in one process, their steps strictly alternating (each run's onStep
 * hands the turn to the other and waits for it back), each step's CPU and wall time taken from
 * its turn's start to its end. The VM's speed drifts over tens of seconds; two steps run back
 * to back see the same speed, so the per-pair ratio is stable where separate runs are not.
 */
async function pairedWorker(model: string, runs: [string, string], steps: number, ids: string): Promise<void> {
  const turns = new Turns();
  const data = await idSet(ids);
  const cpu: number[][] = [[], []];
  const wall: number[][] = [[], []];
  const started = [0, 1].map(() => ({ cpu: process.cpuUsage(), wall: performance.now() }));
  const onStep = (who: number) => async (r: { step: number }) => {
    const used = process.cpuUsage(started[who]!.cpu);
    cpu[who]!.push((used.user + used.system) / 1000);
    wall[who]!.push(performance.now() - started[who]!.wall);
    turns.pass(1 - who);
    if (r.step === steps) return;
    await turns.wait(who);
    started[who] = { cpu: process.cpuUsage(), wall: performance.now() };
  };
  const common = { model, modelDir: model, stage: 1, train: data, steps, batchSize: BATCH, gradAccum: ACCUM, lr: 1e-4, saveEvery: 0, backend: 'wasm', expand: false } as const;
  await Promise.all([
    runStage({ ...common, run: runs[0], method: 'vanilla', onStep: onStep(0) }),
    runStage({ ...common, run: runs[1], method: 'apex', setting: 'full', onStep: onStep(1) }),
  ]);
  const pairs = (v: number[][]) => v[0]!.slice(WARMUP).map((x, i) => [x, v[1]![WARMUP + i]!] as [number, number]);
  const out: PairedResult = { cpu: pairs(cpu), wall: pairs(wall) };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function measure(args: string[]): WorkerResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'worker', ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 22 });
  if (r.status !== 0) throw new Error(`worker failed (${args.join(' ')}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as WorkerResult;
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'worker') return worker(argv[1]!, argv[2]!, argv[3] as StageMethod, argv[4]!, argv[5]!, Number(argv[6]), argv[7]!);
  if (argv[0] === 'paired-worker') return pairedWorker(argv[1]!, [argv[2]!, argv[3]!], Number(argv[4]), argv[5]!);
  const opt = (name: string, fallback: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1]! : fallback; };
  process.env.APEX_BENCH_BATCH = opt('--batch', String(BATCH));
  process.env.APEX_BENCH_ACCUM = opt('--grad-accum', String(ACCUM));
  process.env.APEX_BENCH_SEQ_LEN = opt('--seq-len', String(SEQ_LEN));
  if (Number(process.env.APEX_BENCH_BATCH) !== BATCH || Number(process.env.APEX_BENCH_SEQ_LEN) !== SEQ_LEN || Number(process.env.APEX_BENCH_ACCUM) !== ACCUM) {
    // The shape is read at module load: run again with it in the environment.
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...argv], { stdio: 'inherit', env: process.env });
    process.exit(r.status ?? 1);
  }
  const work = opt('--work', '/tmp/apex-train-bench');
  const steps = Number(opt('--steps', '10'));
  const python = opt('--python', '/usr/bin/python3');
  mkdirSync(work, { recursive: true });
  const model = join(work, 'small-10m-f32');
  if (!existsSync(join(model, 'config.json'))) await writeRandomCheckpoint(model, SMALL, 'F32');
  const ids = join(work, `train-ids-${BATCH}x${SEQ_LEN}.safetensors`);
  const rng = new Rng(3);
  await writeSafetensors(ids, [i32Tensor('input_ids', [BATCH, SEQ_LEN], Int32Array.from({ length: BATCH * SEQ_LEN }, (_, i) => (i % SEQ_LEN === 0 ? 1 : rng.nextInt(SMALL.vocab))))]);
  const analysis = join(work, 'train-analysis');
  rmSync(analysis, { recursive: true, force: true });
  await runAnalysis({ model, output: join(analysis, 'analysis'), data: await idSet(ids), batchSize: BATCH, ratio: 0.375, seed: 0, backend: 'wasm' });

  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}; node ${process.version}; ${new Date().toISOString().slice(0, 10)}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const pairedSteps = Number(opt('--paired', '0'));
  if (pairedSteps > 0) {
    const runs = ['paired-vanilla', 'paired-apex-full'].map((r) => join(work, r)) as [string, string];
    for (const run of runs) rmSync(run, { recursive: true, force: true });
    mkdirSync(runs[1], { recursive: true });
    cpSync(join(analysis, 'analysis'), join(runs[1], 'analysis'), { recursive: true });
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'paired-worker', model, ...runs, String(pairedSteps), ids], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 22 });
    if (r.status !== 0) throw new Error(`paired worker failed: ${r.stderr}`);
    const p = JSON.parse(r.stdout.trim().split('\n').pop()!) as PairedResult;
    const medianOf = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)]!;
    const pct = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
    const report = (label: string, pairs: [number, number][]) => {
      const ratios = pairs.map(([v, a]) => a / v - 1);
      const sum = (i: 0 | 1) => pairs.reduce((t, x) => t + x[i], 0);
      console.log(`| ${label} | ${medianOf(pairs.map((x) => x[0])).toFixed(0)} | ${medianOf(pairs.map((x) => x[1])).toFixed(0)} | **${pct(medianOf(ratios))}** | ${pct(sum(1) / sum(0) - 1)} | ${pct(Math.min(...ratios))} … ${pct(Math.max(...ratios))} |`);
    };
    console.log(`\nAPEX full overhead per step over vanilla, ${ACCUM} × ${BATCH} × ${SEQ_LEN} tokens per step, the two runs in one process with their steps alternating (${p.cpu.length} pairs after ${WARMUP} warm-up steps each; target ≤ 5%):`);
    console.log('| measure | vanilla ms/step (median) | APEX full ms/step (median) | overhead, median of pairs | overhead, total | range over pairs |');
    console.log('|---|---|---|---|---|---|');
    report('CPU time', p.cpu);
    report('wall time', p.wall);
    const macs = await stepArithmetic(join(runs[1], 'stages', '1', 'operators.safetensors'));
    console.log(`\nMultiply-adds per step: vanilla ${(macs.vanilla / 1e9).toFixed(2)} G; APEX full adds ${(macs.apex / 1e6).toFixed(0)} M (${pct(macs.apex / macs.vanilla)} of vanilla's: the overhead's arithmetic floor at equal efficiency).`);
    if (process.env.APEX_BENCH_VERBOSE) console.log(JSON.stringify(p));
    return;
  }
  console.log(`\n~10M-parameter LLaMA (8 layers, hidden 256, GQA 8/4, I 688, vocab 8192, untied, f32), ${BATCH} × ${SEQ_LEN} tokens per micro-batch, ${ACCUM} micro-batch(es) per step, median of ${steps - WARMUP} steps after ${WARMUP} warm-up:`);
  console.log('| engine | method / setting | trainable | wall ms/step | CPU ms/step | tokens/s (wall) | tokens per CPU-s | peak RSS | estimate | first loss |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const ours: Record<string, WorkerResult> = {};
  const only = opt('--only', 'vanilla,full,structured,operators,lora').split(',');
  const runs = ([['vanilla', '-'], ['apex', 'full'], ['apex', 'structured'], ['apex', 'operators'], ['lora', '-']] as const).filter(([m, s]) => only.includes(s === '-' ? m : s));
  // This VM's speed drifts by ±10% between processes a minute apart: each setting runs once per
  // round, rounds alternate the order, and the table reports each setting's median round; the
  // APEX overhead is taken within each round (full against that round's vanilla).
  const rounds = Number(opt('--rounds', '1'));
  const perRound: Record<string, WorkerResult>[] = [];
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? runs : [...runs].reverse();
    const results: Record<string, WorkerResult> = {};
    for (const [method, setting] of order) {
      const run = join(work, `train-${method}-${setting}`);
      rmSync(run, { recursive: true, force: true });
      mkdirSync(run, { recursive: true });
      if (method === 'apex') cpSync(join(analysis, 'analysis'), join(run, 'analysis'), { recursive: true });
      results[`${method}${setting !== '-' ? ` ${setting}` : method === 'lora' ? ' r8' : ''}`] = measure([model, run, method, setting, 'wasm', String(steps), ids]);
    }
    perRound.push(results);
  }
  const medianOf = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)]!;
  for (const key of Object.keys(perRound[0]!)) {
    const all = perRound.map((r) => r[key]!);
    const r = all.find((x) => x.cpuMsPerStep === medianOf(all.map((y) => y.cpuMsPerStep)))!;
    ours[key] = r;
    console.log(`| apex wasm | ${key} | ${r.trainable.toLocaleString('en-US')} (${(100 * r.fraction).toFixed(1)}%) | ${r.msPerStep.toFixed(0)} | ${r.cpuMsPerStep.toFixed(0)} | ${r.tokensPerSecond.toFixed(0)} | ${((1000 * ACCUM * BATCH * SEQ_LEN) / r.cpuMsPerStep).toFixed(0)} | ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB | ${(r.memoryEstimateBytes / 2 ** 20).toFixed(0)} MiB | ${r.firstLoss.toFixed(4)} |`);
  }
  if (rounds > 1 && perRound[0]!.vanilla && perRound[0]!['apex full']) {
    const each = perRound.map((r) => (r['apex full']!.cpuMsPerStep / r.vanilla!.cpuMsPerStep - 1) * 100);
    console.log(`\nAPEX full overhead by CPU time, per round: ${each.map((x) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`).join(', ')}; median ${medianOf(each) >= 0 ? '+' : ''}${medianOf(each).toFixed(1)}%`);
  }
  if (!ours.vanilla || !ours['apex full']) return;
  const py = spawnSync(python, [join(ROOT, 'bench', 'pytorch', 'train_step.py'), model, ids, String(steps - 2)], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '2' },
  });
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`;
  const overhead = (k: 'msPerStep' | 'cpuMsPerStep') => pct((ours['apex full']![k] / ours.vanilla![k] - 1) * 100);
  console.log(`\nAPEX full overhead per step over vanilla: ${overhead('cpuMsPerStep')} by CPU time, ${overhead('msPerStep')} by wall time (target ≤ 5%)`);
  if (py.status !== 0) {
    console.log(`PyTorch run failed: ${py.error?.message ?? py.stderr.trim().split('\n').pop()}`);
    return;
  }
  const torch = JSON.parse(py.stdout.trim().split('\n').pop()!) as { secondsPerStep: number; cpuSecondsPerStep: number; tokensPerSecond: number; firstLoss: number; params: number; torch: string; threads: number };
  const torchCpuMs = torch.cpuSecondsPerStep * 1000;
  console.log(`| PyTorch ${torch.torch} CPU fp32 (${torch.threads} intra-op thread, OpenBLAS 2) | vanilla | ${torch.params.toLocaleString('en-US')} (100%) | ${(torch.secondsPerStep * 1000).toFixed(0)} | ${torchCpuMs.toFixed(0)} | ${torch.tokensPerSecond.toFixed(0)} | ${((1000 * BATCH * SEQ_LEN) / torchCpuMs).toFixed(0)} | | | ${torch.firstLoss.toFixed(4)} |`);
  console.log(`training throughput ratio apex wasm vanilla / PyTorch: ${(ours.vanilla!.tokensPerSecond / torch.tokensPerSecond).toFixed(3)} by wall time, ${(torchCpuMs / ours.vanilla!.cpuMsPerStep).toFixed(3)} by CPU time; first-step loss |apex − PyTorch| ${Math.abs(ours.vanilla!.firstLoss - torch.firstLoss).toExponential(2)}`);
}

await main(process.argv.slice(2));
