/**
 * Forward-pass / eval benchmark (results go to docs/benchmarks.md, "Forward pass / eval"):
 * 1. a TinyLlama-1.1B-shaped bf16 checkpoint with random weights (22 layers, and the same
 *    shape with 4 layers) evaluated on 8 × 128 tokens with the streaming forward: peak RSS
 *    (flat in depth?) and tokens/s per backend;
 * 2. a ~10M-parameter model's forward throughput on 8 × 128 tokens next to PyTorch CPU
 *    (bench/pytorch/llama_forward.py, same weights, same tokens; NLLs must agree).
 * Every measurement runs in a fresh child process so that peak RSS belongs to it alone.
 *
 *   npx tsx bench/eval.ts [--work /tmp/apex-bench] [--skip-large] [--python /usr/bin/python3]
 *   npx tsx bench/eval.ts worker <model-dir> <backend> <ids.safetensors>   (one measurement)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Checkpoint } from '../src/io/checkpoint.js';
import { i32Tensor, writeSafetensors } from '../src/io/safetensors-writer.js';
import { selectBackend, type BackendName } from '../src/model/backend.js';
import { ResidentWeightSource, loadModelWeights } from '../src/model/model-weights.js';
import { evaluateNll } from '../src/model/streaming-forward.js';
import { CheckpointWeightSource, describeCheckpoint } from '../src/model/weight-source.js';
import { readInputIds } from '../src/train/data-input-ids.js';
import { Rng } from '../src/util/rng.js';
import { writeRandomCheckpoint, type RandomModelShape } from './random-checkpoint.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TINYLLAMA: RandomModelShape = { layers: 22, hidden: 2048, heads: 32, kvHeads: 4, intermediate: 5632, vocab: 32000 };
const SMALL: RandomModelShape = { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 8192 };
const BATCH = 8;
const SEQ_LEN = 128;

interface WorkerResult {
  meanNll: number;
  seconds: number;
  /** CPU time (user + system) of the timed passes: the figure load on a shared machine does not inflate. */
  cpuSeconds: number;
  tokensPerSecond: number;
  peakRssBytes: number;
  backend: string;
  chunkSequences: number;
  /** estimateForwardMemory's total for the plan the run used. */
  estimatedBytes: number;
}

type Mode = 'streaming' | 'resident';

/**
 * streaming: one `apex eval`-style pass, weights read from disk layer by layer (cold, as users run it);
 * resident: weights in memory, best of 3 passes after a warm-up (forward throughput, as PyTorch is timed).
 */
async function worker(dir: string, backend: BackendName, idsFile: string, mode: Mode): Promise<void> {
  await selectBackend(backend);
  const { rows } = await readInputIds(idsFile);
  const checkpoint = await Checkpoint.open(dir);
  const { spec } = describeCheckpoint(checkpoint);
  const source = mode === 'resident' ? new ResidentWeightSource((await loadModelWeights(checkpoint)).model) : new CheckpointWeightSource(checkpoint, spec);
  let seconds = Infinity;
  let cpuSeconds = Infinity;
  let r: Awaited<ReturnType<typeof evaluateNll>> | undefined;
  for (let run = 0; run < (mode === 'resident' ? 4 : 1); run++) {
    const started = performance.now();
    const cpu = process.cpuUsage();
    r = await evaluateNll(source, rows, { batchSize: BATCH });
    const used = process.cpuUsage(cpu);
    if (mode === 'streaming' || run > 0) {
      seconds = Math.min(seconds, (performance.now() - started) / 1000);
      cpuSeconds = Math.min(cpuSeconds, (used.user + used.system) / 1e6);
    }
  }
  await checkpoint.close();
  const result: WorkerResult = {
    meanNll: r!.meanNll, seconds, cpuSeconds, tokensPerSecond: (rows.length * rows[0]!.length) / seconds,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, backend, chunkSequences: r!.plan.chunkSequences, estimatedBytes: r!.plan.estimate.totalBytes,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function measure(dir: string, backend: BackendName, idsFile: string, mode: Mode = 'streaming'): WorkerResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'worker', dir, backend, idsFile, mode], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`worker failed (${dir}, ${backend}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as WorkerResult;
}

async function writeIds(file: string, vocab: number, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const ids = Int32Array.from({ length: BATCH * SEQ_LEN }, (_, i) => (i % SEQ_LEN === 0 ? 1 : rng.nextInt(vocab)));
  await writeSafetensors(file, [i32Tensor('input_ids', [BATCH, SEQ_LEN], ids)]);
}

async function ensureModel(dir: string, shape: RandomModelShape, dtype: 'BF16' | 'F32'): Promise<void> {
  if (existsSync(join(dir, 'config.json'))) return;
  const t = performance.now();
  await writeRandomCheckpoint(dir, shape, dtype);
  console.error(`wrote ${dir} in ${((performance.now() - t) / 1000).toFixed(0)} s`);
}

const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
const tokens = BATCH * SEQ_LEN;

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'worker') return worker(argv[1]!, argv[2] as BackendName, argv[3]!, argv[4] as Mode);
  const opt = (name: string, fallback: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1]! : fallback; };
  const work = opt('--work', '/tmp/apex-bench');
  const python = opt('--python', '/usr/bin/python3');
  mkdirSync(work, { recursive: true });
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}; node ${process.version}; ${new Date().toISOString().slice(0, 10)}`);

  if (!argv.includes('--skip-large')) {
    const ids = join(work, 'tinyllama-ids.safetensors');
    await writeIds(ids, TINYLLAMA.vocab, 1);
    console.log(`\nTinyLlama-1.1B shape, bf16, random weights, ${BATCH} × ${SEQ_LEN} tokens, streaming eval:`);
    console.log('| layers | backend | peak RSS | estimate (estimateForwardMemory) | wall s | CPU s | tokens/s (wall) | tokens per CPU-second | mean NLL |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const layers of [4, 22]) {
      const dir = join(work, `tinyllama-${layers}l-bf16`);
      await ensureModel(dir, { ...TINYLLAMA, layers }, 'BF16');
      const r = measure(dir, 'wasm', ids);
      console.log(`| ${layers} | wasm | ${gb(r.peakRssBytes)} | ${gb(r.estimatedBytes)} | ${r.seconds.toFixed(1)} | ${r.cpuSeconds.toFixed(1)} | ${r.tokensPerSecond.toFixed(1)} | ${(tokens / r.cpuSeconds).toFixed(1)} | ${r.meanNll.toFixed(4)} |`);
    }
  }

  const dir = join(work, 'small-10m-f32');
  await ensureModel(dir, SMALL, 'F32');
  const ids = join(work, 'small-ids.safetensors');
  await writeIds(ids, SMALL.vocab, 2);
  console.log(`\n~10M-parameter model (8 layers, hidden 256, GQA 8/4, I 688, vocab 8192), f32, ${BATCH} × ${SEQ_LEN} tokens:`);
  console.log('| engine | wall s | CPU s | tokens/s (wall) | tokens per CPU-second | mean NLL |');
  console.log('|---|---|---|---|---|---|');
  const ours: Record<string, WorkerResult> = {};
  // The pure-JS cpu backend needs over a minute per pass here: one streaming pass only.
  for (const [backend, modes] of [['wasm', ['streaming', 'resident']], ['cpu', ['streaming']]] as const) {
    for (const mode of modes) {
      const r = measure(dir, backend, ids, mode);
      ours[`${backend}-${mode}`] = r;
      const label = mode === 'streaming' ? 'streaming eval, cold, weights from disk' : 'weights in memory, best of 3 after warm-up';
      console.log(`| apex ${backend} (${label}) | ${r.seconds.toFixed(2)} | ${r.cpuSeconds.toFixed(2)} | ${r.tokensPerSecond.toFixed(0)} | ${(tokens / r.cpuSeconds).toFixed(0)} | ${r.meanNll.toFixed(5)} |`);
    }
  }
  const py = spawnSync(python, [join(ROOT, 'bench', 'pytorch', 'llama_forward.py'), dir, ids], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '2' },
  });
  if (py.status !== 0) {
    console.log(`PyTorch run failed: ${py.error?.message ?? py.stderr.trim().split('\n').pop()}`);
    return;
  }
  const torch = JSON.parse(py.stdout.trim().split('\n').pop()!) as { meanNll: number; seconds: number; cpuSeconds: number; tokensPerSecond: number; torch: string; threads: number };
  console.log(`| PyTorch ${torch.torch} CPU fp32 (${torch.threads} intra-op thread, OpenBLAS 2; weights in memory, best of 3 after warm-up) | ${torch.seconds.toFixed(2)} | ${torch.cpuSeconds.toFixed(2)} | ${torch.tokensPerSecond.toFixed(0)} | ${(tokens / torch.cpuSeconds).toFixed(0)} | ${torch.meanNll.toFixed(5)} |`);
  const ratio = (k: string) => `${(ours[k]!.tokensPerSecond / torch.tokensPerSecond).toFixed(3)} (wall), ${(torch.cpuSeconds / ours[k]!.cpuSeconds).toFixed(3)} (CPU time)`;
  console.log(`\nforward throughput apex / PyTorch: wasm, weights in memory, warm: ${ratio('wasm-resident')}; cpu, streaming: ${ratio('cpu-streaming')}`);
  console.log(`NLL agreement |apex wasm − PyTorch|: ${Math.abs(ours['wasm-resident']!.meanNll - torch.meanNll).toExponential(2)}`);
}

await main(process.argv.slice(2));
