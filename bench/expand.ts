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
 * peak RSS (reported by the command itself) is that of a real run. Prints a Markdown summary.
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

function seconds(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

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
  await rm(copyOut, { recursive: true, force: true });
  const cpSeconds = seconds(() => {
    execFileSync('cp', ['-r', model, copyOut]);
    execFileSync('sync');
  });
  await rm(copyOut, { recursive: true, force: true });

  await rm(expandOut, { recursive: true, force: true });
  let stdout = '';
  const expandSeconds = seconds(() => {
    const r = spawnSync(process.execPath, ['bin/run.js', 'expand', model, '--operators', operators, '-o', expandOut, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    stdout = r.stdout;
    if (r.status !== 0) throw new Error(`expand failed (${r.status}): ${r.stdout}\n${r.stderr}`);
  });
  const result = JSON.parse(stdout) as { data: { tensors: { changed: number; copied: number }; memory: { totalBytes: number; tensorBytes: number; peakRssBytes: number; largestTensor: string } } };
  const record = JSON.parse(await readFile(join(expandOut, 'apex_run.json'), 'utf8')) as { timings: Record<string, number>; cpu_seconds: { user: number; system: number } };
  const { memory, tensors } = result.data;
  const gb = (b: number) => (b / 1e9).toFixed(2);
  const mb = (b: number) => (b / 2 ** 20).toFixed(0);
  const lines = [
    `machine: ${cpus().length}× ${cpus()[0]?.model ?? 'CPU'}, node ${process.versions.node}, ${new Date().toISOString().slice(0, 10)}, load average ${loadavg().map((x) => x.toFixed(1)).join(' / ')}`,
    `checkpoint: ${gb(bytes)} GB bf16, ${tensors.changed} tensors fused, ${tensors.copied} copied`,
    `cp + sync: ${cpSeconds.toFixed(1)} s (${gb(bytes / cpSeconds)} GB/s)`,
    `apex expand (CLI, wall): ${expandSeconds.toFixed(1)} s (${gb(bytes / expandSeconds)} GB/s) → ratio ${(cpSeconds / expandSeconds).toFixed(2)}× of cp + sync`,
    `phases (s): ${Object.entries(record.timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}; CPU ${record.cpu_seconds.user.toFixed(1)} s user + ${record.cpu_seconds.system.toFixed(1)} s system`,
    `peak RSS: ${mb(memory.peakRssBytes)} MiB; estimate ${mb(memory.totalBytes)} MiB (largest tensor ${memory.largestTensor}: ${mb(memory.tensorBytes)} MiB)`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  await rm(expandOut, { recursive: true, force: true });
}

await main();
