/**
 * Benchmark of `apex analyze` (results in docs/benchmarks.md, section "Analysis"):
 *
 * 1. Memory flat in depth: TinyLlama-1.1B-shaped bf16 checkpoints with random weights (hidden
 *    2048, 32 query / 4 KV heads, 5632 channels, vocab 32000, untied, one model.safetensors)
 *    with 4 and with 22 layers, analysed on 8 × 128 random tokens (one micro-batch of 8) on the
 *    wasm backend, each in a fresh process: peak RSS (VmHWM) minus the RSS right before the
 *    analysis starts (modules loaded, backend initialised), against the printed estimate.
 * 2. Effective-rank cost per matrix size (float64 SVD, values only), in this process.
 *
 *   npx tsx bench/analyze.ts [--layers 4,22] [--erank 256x256,1024x1024,2048x5632] [--dir /tmp/apex-bench-analyze]
 *
 * The checkpoints (2.2 GB for 22 layers) are written once under --dir and reused.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCheckpoint, type OutputTensor } from '../src/io/checkpoint-writer.js';
import { layerTensors, globalTensors } from '../src/model/architecture.js';
import { selectBackend } from '../src/model/backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { effectiveRank } from '../src/ops/effective-rank.js';
import { runAnalysis } from '../src/pipeline/analyze.js';
import { formatBytes } from '../src/report/number-format.js';
import type { SequenceSet } from '../src/train/data.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : fallback;
};
const dir = option('--dir', '/tmp/apex-bench-analyze');

function tinyLlamaConfig(layers: number): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: layers,
    num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 2048, rms_norm_eps: 1e-5,
    rope_theta: 10000, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'bfloat16',
  };
}

/** Uniform random bf16 values with std 0.02 (xorshift32, truncated float32 bits); norms are 1. */
function randomBf16(count: number, seed: number, ones: boolean): Uint8Array {
  const out = new Uint16Array(count);
  if (ones) return new Uint8Array(out.fill(0x3f80).buffer);
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  let x = seed >>> 0 || 1;
  const a = 0.02 * Math.sqrt(3);
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    f[0] = (x / 4294967296 * 2 - 1) * a;
    out[i] = bits[0]! >>> 16;
  }
  return new Uint8Array(out.buffer);
}

async function ensureCheckpoint(layers: number): Promise<string> {
  const out = join(dir, `tinyllama-shaped-${layers}L`);
  if (existsSync(join(out, 'model.safetensors'))) return out;
  const config = tinyLlamaConfig(layers);
  const spec = parseModelConfig(config, 'bench config');
  const described = [...globalTensors(spec).map((g) => ({ name: g.name, dims: g.dims, norm: g.role === 'final_norm' })),
    ...Array.from({ length: layers }, (_, l) => layerTensors(spec, l).map((t) => ({ name: t.name, dims: t.dims, norm: t.role.endsWith('layernorm') }))).flat()];
  const tensors: OutputTensor[] = described.map((t, i) => ({
    name: t.name, dtype: 'BF16', shape: t.dims,
    source: { kind: 'bytes', data: async () => randomBf16(t.dims.reduce((p, d) => p * d, 1), 1000 + i, t.norm) },
  }));
  process.stderr.write(`writing ${out} ...\n`);
  await writeCheckpoint({ outDir: out, tensors, files: { 'config.json': `${JSON.stringify(config, null, 2)}\n` }, copyModelFiles: false, hash: false, force: true });
  return out;
}

function statusKiB(field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m![1]) * 1024;
}

/** Child mode: one analysis in a fresh process; prints one JSON line. */
async function child(model: string, layers: number): Promise<void> {
  await selectBackend('wasm');
  let x = 12345;
  const sequences = Array.from({ length: 8 }, () => Int32Array.from({ length: 128 }, (_, t) => {
    x = (x * 1103515245 + 12345) >>> 0;
    return t === 0 ? 1 : 3 + (x % 31997);
  }));
  const data: SequenceSet = {
    seqLen: 128, sequences,
    source: { kind: 'input-ids', paths: [], sha256: [], seqLen: 128, seed: 0, split: 'all', heldoutFraction: 0.05, splitSeed: 0, documents: 8, sequences: 8, tokens: 1024 },
  };
  const out = join(dir, `analysis-${layers}L`);
  const baseline = statusKiB('VmRSS');
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const r = await runAnalysis({ model, output: out, data, batchSize: 8, ratio: 0.375, seed: 0, backend: 'wasm', force: true });
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const peak = statusKiB('VmHWM');
  rmSync(out, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ layers, baseline, peak, estimate: r.memory.totalBytes, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, forwardSeconds: r.analysis.timing.forwardSeconds, loadAverage: loadavg()[0] })}\n`);
}

interface ChildResult { layers: number; baseline: number; peak: number; estimate: number; seconds: number; cpuSeconds: number; forwardSeconds: number; loadAverage: number }

async function main(): Promise<void> {
  if (args[0] === '--child') return child(args[1]!, Number(args[2]));
  const depths = option('--layers', '4,22').split(',').filter((s) => s).map(Number);
  const rows: ChildResult[] = [];
  for (const layers of depths) {
    const model = await ensureCheckpoint(layers);
    const self = fileURLToPath(import.meta.url);
    const line = execFileSync(process.execPath, ['--import', 'tsx', self, '--child', model, String(layers)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
    rows.push(JSON.parse(line.trim().split('\n').pop()!) as ChildResult);
  }
  console.log(`\nmachine: ${cpus()[0]?.model} × ${cpus().length}, node ${process.versions.node}, backend wasm\n`);
  console.log('| layers | wall time (forward) | CPU time | load average | baseline RSS | peak RSS − baseline | printed estimate | estimate / measured |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const used = r.peak - r.baseline;
    console.log(`| ${r.layers} | ${r.seconds.toFixed(1)} s (${r.forwardSeconds.toFixed(1)} s) | ${r.cpuSeconds.toFixed(1)} s | ${r.loadAverage.toFixed(1)} | ${formatBytes(r.baseline)} | ${formatBytes(used)} | ${formatBytes(r.estimate)} | ${(r.estimate / used).toFixed(2)} |`);
  }
  const sizes = option('--erank', '256x256,1024x1024,2048x5632').split(',').filter((s) => s).map((s) => s.split('x').map(Number) as [number, number]);
  if (sizes.length > 0) {
    console.log(`\nload average ${loadavg()[0]!.toFixed(1)}\n\n| matrix | effective rank (random) | seconds | CPU seconds |`);
    console.log('|---|---:|---:|---:|');
    for (const [m, n] of sizes) {
      const W = randomBf16(m * n, m + n, false);
      const values = new Float32Array(m * n);
      const bits = new Uint16Array(W.buffer);
      const u32 = new Uint32Array(values.buffer);
      for (let i = 0; i < values.length; i++) u32[i] = bits[i]! << 16;
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const e = effectiveRank(values, m, n);
      const c = process.cpuUsage(c0);
      console.log(`| ${m} × ${n} | ${e.toFixed(1)} | ${((performance.now() - t0) / 1000).toFixed(2)} | ${((c.user + c.system) / 1e6).toFixed(2)} |`);
    }
  }
}

await main();
