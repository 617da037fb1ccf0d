/**
 * Checkpoint rewrite benchmark: copy-through of a generated BF16 checkpoint with TinyLlama-1.1B
 * shapes (~2.2 GB, 2 shards) through apex's strict reader and atomic writer, next to `cp` +
 * `sync` of the same files, warm page cache. Reports the throughput ratio (cp time / apex
 * time) and apex's peak RSS (measured inside a child process that does only the rewrite).
 *
 *   npx tsx bench/rewrite.ts [--dir /tmp/apex-bench-rewrite] [--runs 3] [--keep]
 *
 * Modes timed, each in a fresh child process: `stream` (open, validate, stream every tensor
 * through JS buffers, fsync, rename: the copy-through path every rewrite uses), `stream+verify`
 * (the same plus sha256 of every tensor and a read-back check, writeCheckpoint's default) and
 * `kernel-copy` (writeCheckpoint's fast path for shards that come out byte-identical: the
 * kernel copies them, as `cp` does).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Checkpoint } from '../src/io/checkpoint.js';
import { copyAllTensors, type OutputTensor, writeCheckpoint } from '../src/io/checkpoint-writer.js';
import { formatBytes } from '../src/io/byte-size.js';

const TINYLLAMA = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 2048,
  intermediate_size: 5632,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  num_hidden_layers: 22,
  vocab_size: 32000,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
};

function tinyLlamaTensors(): { name: string; shape: number[] }[] {
  const c = TINYLLAMA;
  const kv = (c.hidden_size / c.num_attention_heads) * c.num_key_value_heads;
  const out = [
    { name: 'model.embed_tokens.weight', shape: [c.vocab_size, c.hidden_size] },
    { name: 'lm_head.weight', shape: [c.vocab_size, c.hidden_size] },
    { name: 'model.norm.weight', shape: [c.hidden_size] },
  ];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      { name: `${p}.self_attn.q_proj.weight`, shape: [c.hidden_size, c.hidden_size] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, c.hidden_size] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, c.hidden_size] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [c.hidden_size, c.hidden_size] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [c.intermediate_size, c.hidden_size] },
      { name: `${p}.mlp.up_proj.weight`, shape: [c.intermediate_size, c.hidden_size] },
      { name: `${p}.mlp.down_proj.weight`, shape: [c.hidden_size, c.intermediate_size] },
      { name: `${p}.input_layernorm.weight`, shape: [c.hidden_size] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [c.hidden_size] },
    );
  }
  return out;
}

/** Writes the generated checkpoint (random bytes streamed in 16 MiB chunks) unless present. */
async function generate(dir: string): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors.index.json'))) return;
  const block = randomFillSync(new Uint8Array(16 << 20));
  const tensors: OutputTensor[] = tinyLlamaTensors().map((t) => ({
    name: t.name,
    dtype: 'BF16',
    shape: t.shape,
    source: {
      kind: 'bytes',
      data: async function* () {
        let left = t.shape.reduce((a, b) => a * b, 2);
        while (left > 0) {
          const n = Math.min(left, block.length);
          yield block.subarray(0, n);
          left -= n;
        }
      },
    },
  }));
  await writeCheckpoint({
    outDir: dir,
    tensors,
    layout: { kind: 'plan', maxShardBytes: 1_200_000_000 },
    files: { 'config.json': `${JSON.stringify(TINYLLAMA, null, 2)}\n` },
    hash: false,
  });
}

/** Child process: one rewrite, then print elapsed seconds and peak RSS as JSON. */
async function child(input: string, output: string, verify: boolean, kernelCopy: boolean): Promise<void> {
  const t0 = process.hrtime.bigint();
  const ck = await Checkpoint.open(input);
  await writeCheckpoint({ outDir: output, input: ck, tensors: copyAllTensors(ck), layout: { kind: 'keep' }, hash: verify, kernelCopy });
  await ck.close();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, maxRssBytes: process.resourceUsage().maxRSS * 1024 })}\n`);
}

async function filesBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size;
  return n;
}

async function clean(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
  execFileSync('sync');
}

function warm(dir: string): void {
  execFileSync('sh', ['-c', `cat ${JSON.stringify(dir)}/* > /dev/null`]);
}

function timeCp(input: string, output: string): number {
  const t0 = process.hrtime.bigint();
  execFileSync('cp', ['-r', input, output]);
  execFileSync('sync');
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function timeApex(input: string, output: string, verify: boolean, kernelCopy: boolean): { seconds: number; cpuSeconds: number; maxRssBytes: number } {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', input, output, ...(verify ? ['--verify'] : []), ...(kernelCopy ? ['--kernel-copy'] : [])], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { dir: { type: 'string', default: '/tmp/apex-bench-rewrite' }, runs: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false }, child: { type: 'boolean', default: false }, verify: { type: 'boolean', default: false }, 'kernel-copy': { type: 'boolean', default: false } },
  });
  if (values.child) return child(positionals[0]!, positionals[1]!, values.verify!, values['kernel-copy']!);
  const input = join(values.dir!, 'tinyllama-bf16');
  const out = join(values.dir!, 'out');
  const runs = Number(values.runs);
  console.error(`generating ${input} ...`);
  await generate(input);
  const bytes = await filesBytes(input);
  console.error(`input: ${formatBytes(bytes)} in ${(await readdir(input)).join(', ')}`);
  const modes = {
    cp: { seconds: [] as number[], cpu: [] as number[], rss: 0 },
    stream: { seconds: [] as number[], cpu: [] as number[], rss: 0 },
    'stream+verify': { seconds: [] as number[], cpu: [] as number[], rss: 0 },
    'kernel-copy': { seconds: [] as number[], cpu: [] as number[], rss: 0 },
  };
  for (let i = 0; i < runs; i++) {
    for (const [mode, m] of Object.entries(modes)) {
      await clean(out);
      warm(input);
      if (mode === 'cp') m.seconds.push(timeCp(input, out));
      else {
        const r = timeApex(input, out, mode === 'stream+verify', mode === 'kernel-copy');
        m.seconds.push(r.seconds);
        m.cpu.push(r.cpuSeconds);
        m.rss = Math.max(m.rss, r.maxRssBytes);
      }
      console.error(`run ${i + 1} ${mode}: ${m.seconds.at(-1)!.toFixed(2)} s (load ${loadavg()[0]!.toFixed(1)})`);
    }
  }
  if (!values.keep) await clean(values.dir!);
  else await clean(out);
  const cpMedian = median(modes.cp.seconds);
  const result = {
    machine: `${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${formatBytes(totalmem())} RAM, node ${process.version}`,
    date: new Date().toISOString().slice(0, 10),
    bytes,
    runs,
    modes: Object.fromEntries(
      Object.entries(modes).map(([mode, m]) => [
        mode,
        { medianSeconds: median(m.seconds), GBps: bytes / median(m.seconds) / 1e9, ratioToCp: cpMedian / median(m.seconds), peakRssMB: m.rss / 1e6, seconds: m.seconds, ...(m.cpu.length ? { cpuSeconds: m.cpu } : {}) },
      ]),
    ),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
