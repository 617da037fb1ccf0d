/**
 * Does a training stage whose wasm tf-heap estimate sits just under the usable heap
 * (WASM_HEAP_USABLE_BYTES, 90% of 4 GiB) complete on wasm over a realistic number of steps,
 * with checkpoints and held-out evaluations between them (docs/reliability.md, "Memory limit and
 * estimates": heap fragmentation near the 4 GiB limit)? For each method/setting it sizes the
 * micro-batch with `apex finetune --dry-run --json` (tfHeapBytes against the usable heap), then
 * runs the built CLI under `/usr/bin/time -v` with scripts/lib/wasm-heap-preload.mjs, which wraps
 * the wasm backend's _malloc/_free and writes the heap's final size, the live-bytes peak, every
 * heap growth and any failed malloc. One JSON line per run on stdout, progress on stderr.
 *
 *     npm run build
 *     npx tsx scripts/wasm-heap-near-limit.ts [--runs vanilla,structured,full] [--batch 10] [--seq-len 256]
 *       [--steps 150] [--save-every 50] [--eval-every 25] [--eval-samples 24] [--size-only]
 *
 * --size-only prints the dry-run estimates (tfHeapBytes against the usable heap) of the batches
 * given with --batch (default 4…16) and stops. The APEX runs share one analysis made first
 * (`apex analyze`, 32 sequences), copied into each run folder. A run deliberately over the usable
 * heap needs the up-front refusal switched off by hand (not done by this script; see
 * docs/reliability.md). Outputs stay under --work (default /tmp/apex-heap-near-limit).
 * Model: generated random-weight LLaMA, cached in /tmp/apex-heap-near-limit-model (8 layers,
 * hidden 128, 8 heads / 4 KV heads of 16, FFN 352, vocabulary 8192, f32, 3.6M parameters).
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from '../bench/random-checkpoint.js';
import { WASM_HEAP_USABLE_BYTES } from '../src/model/wasm-heap-limit.js';
import { ROOT } from './lib/crash-process.js';
import { writeRandomIds } from './lib/random-ids.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: 'vanilla,structured,full' },
    batch: { type: 'string' },
    'seq-len': { type: 'string', default: '256' },
    steps: { type: 'string', default: '150' },
    'save-every': { type: 'string', default: '50' },
    'eval-every': { type: 'string', default: '25' },
    'eval-samples': { type: 'string', default: '24' },
    'size-only': { type: 'boolean', default: false },
    work: { type: 'string', default: '/tmp/apex-heap-near-limit' },
  },
});
const MODEL = '/tmp/apex-heap-near-limit-model';
const BIN = join(ROOT, 'bin', 'run.js');
const PRELOAD = join(ROOT, 'scripts', 'lib', 'wasm-heap-preload.mjs');
const MB = (x: number) => Math.round(x / 1e4) / 100;
const work = values.work!;
const seqLen = Number(values['seq-len']);
const RUNS: Record<string, string[]> = {
  vanilla: ['--method', 'vanilla'],
  structured: ['--setting', 'structured'],
  full: ['--setting', 'full'],
  operators: ['--setting', 'operators'],
};

interface Timed { status: number; stdout: string; stderr: string; seconds: number; maxRssKb: number }
function timed(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Timed> {
  return new Promise((done) => {
    const t0 = performance.now();
    const child = execFile('/usr/bin/time', ['-v', process.execPath, ...nodeArgs, BIN, ...args], { cwd: work, maxBuffer: 512 * 2 ** 20, env: { ...process.env, CI: '1', HF_HUB_OFFLINE: '1', ...env } }, (err, stdout, stderr) => {
      const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      done({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr, seconds: (performance.now() - t0) / 1000, maxRssKb: kb ? Number(kb[1]) : NaN });
    });
    child.stderr?.on('data', (d: Buffer) => { const s = d.toString(); if (/step \d+\/\d+|held-out|checkpoint|error|Error/i.test(s)) process.stderr.write(s.replace(/\r/g, '\n').split('\n').filter((l) => l.trim()).slice(-1).map((l) => `  ${l}\n`).join('')); });
  });
}

const common = (batch: number, label: string) => [
  'finetune', MODEL, '-o', join(work, `run-${label}-${batch}`), '--input-ids', join(work, 'train-ids.safetensors'), '--seq-len', String(seqLen), '--backend', 'wasm',
  '--batch-size', String(batch), '--steps', values.steps!, '--save-every', values['save-every']!, '--eval-every', values['eval-every']!, '--eval-samples', values['eval-samples']!,
  '--lr', '1e-4', '--no-expand', '--json', ...RUNS[label]!,
];

async function estimate(label: string, batch: number): Promise<Record<string, number> & { status: number; message?: string }> {
  const r = await timed([...common(batch, label), '--dry-run']);
  const out = JSON.parse(r.stdout) as { data?: { plan: { memory: Record<string, number> } }; error?: { message: string } };
  if (!out.data) return { status: r.status, message: out.error?.message } as never;
  return { status: r.status, ...out.data.plan.memory };
}

mkdirSync(work, { recursive: true });
if (!existsSync(join(MODEL, 'model.safetensors'))) await writeRandomCheckpoint(MODEL, { layers: 8, hidden: 128, heads: 8, kvHeads: 4, intermediate: 352, vocab: 8192 }, 'F32');
if (!existsSync(join(work, 'train-ids.safetensors'))) await writeRandomIds(join(work, 'train-ids.safetensors'), 8192, 600, seqLen, 7);
process.stderr.write(`usable heap (WASM_HEAP_USABLE_BYTES): ${MB(WASM_HEAP_USABLE_BYTES)} MB\n`);

const labels = values.runs!.split(',');
if (values['size-only']) {
  for (const label of labels) {
    for (const batch of values.batch ? values.batch.split(',').map(Number) : [4, 6, 8, 10, 12, 14, 16]) {
      const e = await estimate(label, batch);
      console.log(JSON.stringify({ label, batch, status: e.status, tfHeapMB: MB(e.tfHeapBytes ?? NaN), ofUsable: (e.tfHeapBytes ?? NaN) / WASM_HEAP_USABLE_BYTES, totalMB: MB(e.totalBytes ?? NaN), sizedBy: e.sizedBy, message: e.message }));
    }
  }
  process.exit(0);
}

// One analysis for the APEX runs (copied into each run folder, so its own peak is not in the stage's process).
const analysis = join(work, 'analysis');
if (labels.some((l) => l !== 'vanilla') && !existsSync(join(analysis, 'analysis.json'))) {
  const a = await timed(['analyze', MODEL, '-o', analysis, '--input-ids', join(work, 'train-ids.safetensors'), '--samples', '32', '--seq-len', String(seqLen), '--backend', 'wasm', '--batch-size', '8', '--json']);
  if (a.status !== 0) throw new Error(`analyze failed: ${a.stderr.slice(-2000)}`);
}
for (const label of labels) {
  const batch = Number(values.batch ?? 10);
  const dir = join(work, `run-${label}-${batch}`);
  rmSync(dir, { recursive: true, force: true }); // before the dry run: of a complete stage it prints no plan
  const e = await estimate(label, batch);
  if (label !== 'vanilla') { mkdirSync(dir, { recursive: true }); cpSync(analysis, join(dir, 'analysis'), { recursive: true }); }
  const statsFile = join(work, `stats-${label}-${batch}.json`);
  rmSync(statsFile, { force: true });
  process.stderr.write(`${label} ${batch} × ${seqLen}: estimate tf heap ${MB(e.tfHeapBytes)} MB (${((100 * e.tfHeapBytes) / WASM_HEAP_USABLE_BYTES).toFixed(1)}% of usable), total ${MB(e.totalBytes)} MB\n`);
  const r = await timed(common(batch, label), { APEX_HEAP_STATS: statsFile }, ['--import', PRELOAD]);
  const stats = existsSync(statsFile) ? (JSON.parse(readFileSync(statsFile, 'utf8')) as Record<string, unknown> & { heapBytes: number; livePeakBytes: number; growths: unknown[]; failures: unknown[] }) : undefined;
  const steps = [...r.stderr.matchAll(/step (\d+)\/(\d+)/g)].map((m) => Number(m[1]));
  let code: string | undefined;
  try { code = (JSON.parse(r.stdout) as { error?: { code?: string } }).error?.code; } catch { /* not JSON */ }
  console.log(JSON.stringify({
    label, batch, seqLen, steps: Number(values.steps), saveEvery: Number(values['save-every']), evalEvery: Number(values['eval-every']),
    exit: r.status, errorCode: code ?? null, lastStepSeen: steps.length ? Math.max(...steps) : null,
    estimate: { tfHeapMB: MB(e.tfHeapBytes), ofUsable: e.tfHeapBytes / WASM_HEAP_USABLE_BYTES, liveMB: MB(e.tfHeapBytes / 1.15), totalMB: MB(e.totalBytes), weightsMB: MB(e.weightBytes), optimizerMB: MB(e.optimizerBytes), activationsMB: MB(e.activationBytes), logitsMB: MB(e.logitBytes), sizedBy: e.sizedBy },
    heapMB: stats ? MB(stats.heapBytes) : null, livePeakMB: stats ? MB(stats.livePeakBytes) : null, heapOverLivePeak: stats ? stats.heapBytes / stats.livePeakBytes : null,
    liveEstOverMeasured: stats ? e.tfHeapBytes / 1.15 / stats.livePeakBytes : null, heapOverEstimate: stats ? stats.heapBytes / e.tfHeapBytes : null,
    maxRssMB: MB(r.maxRssKb * 1024), wallS: Math.round(r.seconds), growths: stats?.growths, failures: stats?.failures,
    stderrTail: r.status !== 0 ? r.stderr.slice(-1500) : undefined,
  }));
}
