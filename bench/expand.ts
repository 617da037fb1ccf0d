/**
 * Benchmark of `apex expand` (docs/benchmarks.md, "Expansion (fusion)"): fuse operators into
 * every layer of a TinyLlama-1.1B-shaped bf16 checkpoint (22 layers, hidden 2048, 32 heads,
 * 4 KV heads, head_dim 64, I 5632, vocab 32000, untied; random weights, one 2.2 GB
 * model.safetensors) at the default ratio (k = 1 KV group, 1056 channels per layer), with
 * trained-looking operator values, and compare with `cp` + `sync` of the same files.
 *
 *   npm run build && npx tsx bench/expand.ts [work-folder]     (default /tmp/apex-bench-expand)
 *
 * The model is generated once and reused. expand runs as the CLI in a child process, so its
 * peak RSS (reported by the command itself) is that of a real run. Both commands run under
 * `sh -c '…; times'`, which gives their CPU time (user + system of the children) next to the
 * wall time: on a shared machine the wall times are inflated, the CPU times much less.
 * Prints a plain-text summary.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseModelConfig } from '../src/model/config.js';
import { freshOperators, perturbOperators, writeOperators, writeRandomLlama } from '../test/pipeline/expand-fixtures.js';

const work = process.argv[2] ?? '/tmp/apex-bench-expand';
const model = join(work, 'tinyllama-shaped');
const operators = join(work, 'operators.safetensors');
const copyOut = join(work, 'cp-copy');
const expandOut = join(work, 'expanded');
const SHAPE = { layers: 22, hidden: 2048, heads: 32, kvHeads: 4, intermediate: 5632, vocab: 32000 };

interface Timed {
  readonly wall: number;
  /** CPU seconds of the command's processes, user and system. */
  readonly user: number;
  readonly system: number;
  readonly stdout: string;
}

/**
 * Runs a shell command line; `times` (POSIX) then reports its children's CPU time on stderr as
 * the last line, "<user> <system>" in the form 1m2.345s.
 */
function timed(commandLine: string, args: readonly string[]): Timed {
  const t0 = performance.now();
  const r = spawnSync('sh', ['-c', `${commandLine} || exit $?; times >&2`, 'sh', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${commandLine} failed (${r.status}): ${r.stdout}\n${r.stderr}`);
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  const parts = [...last.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (parts.length !== 2) throw new Error(`could not read the CPU times from '${last}'`);
  return { wall, user: parts[0]!, system: parts[1]!, stdout: r.stdout };
}

const load1 = () => loadavg()[0]!.toFixed(1);

async function main(): Promise<void> {
  if (!existsSync('dist/commands/expand.js')) throw new Error('run `npm run build` first');
  if (!existsSync(join(model, 'model.safetensors'))) {
    process.stderr.write(`generating the model in ${model} …\n`);
    await writeRandomLlama(model, SHAPE, 'BF16', 1);
  }
  const spec = parseModelConfig(JSON.parse(await readFile(join(model, 'config.json'), 'utf8')) as Record<string, unknown>, model);
  const ops = perturbOperators(freshOperators(spec, 2, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 3);
  await writeOperators(operators, ops, spec);
  const bytes = (await stat(join(model, 'model.safetensors'))).size;

  execFileSync('cat', [join(model, 'model.safetensors')], { stdio: ['ignore', 'ignore', 'inherit'] }); // warm the page cache for both
  const loadBefore = load1();
  await rm(copyOut, { recursive: true, force: true });
  const cp = timed('cp -r "$1" "$2" && sync', [model, copyOut]);
  await rm(copyOut, { recursive: true, force: true });

  await rm(expandOut, { recursive: true, force: true });
  const ex = timed('"$1" bin/run.js expand "$2" --operators "$3" -o "$4" --json', [process.execPath, model, operators, expandOut]);
  const loadAfter = load1();
  const result = JSON.parse(ex.stdout) as { data: { tensors: { changed: number; copied: number }; memory: { totalBytes: number; tensorBytes: number; peakRssBytes: number; largestTensor: string } } };
  const record = JSON.parse(await readFile(join(expandOut, 'apex_run.json'), 'utf8')) as { timings: Record<string, number> };
  const { memory, tensors } = result.data;
  const gb = (b: number) => (b / 1e9).toFixed(2);
  const mb = (b: number) => (b / 2 ** 20).toFixed(0);
  const cpu = (t: Timed) => `${t.user.toFixed(1)} s user + ${t.system.toFixed(1)} s system`;
  const lines = [
    `machine: ${cpus().length}× ${cpus()[0]?.model ?? 'CPU'}, node ${process.versions.node}, ${new Date().toISOString().slice(0, 10)}, load average (1 min) ${loadBefore} before, ${loadAfter} after`,
    `checkpoint: ${gb(bytes)} GB bf16, ${tensors.changed} tensors fused, ${tensors.copied} copied`,
    `cp + sync: wall ${cp.wall.toFixed(1)} s (${gb(bytes / cp.wall)} GB/s), CPU ${cpu(cp)}`,
    `apex expand (CLI): wall ${ex.wall.toFixed(1)} s (${gb(bytes / ex.wall)} GB/s), CPU ${cpu(ex)} → wall ratio ${(cp.wall / ex.wall).toFixed(2)}× of cp + sync`,
    `phases (s): ${Object.entries(record.timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`,
    `peak RSS: ${mb(memory.peakRssBytes)} MiB; estimate ${mb(memory.totalBytes)} MiB (largest tensor ${memory.largestTensor}: ${mb(memory.tensorBytes)} MiB)`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  await rm(expandOut, { recursive: true, force: true });
}

await main();
