/**
 * Peak memory of `apex finetune` when the held-out evaluation runs a larger batch than the
 * training micro-batch (--eval-batch-size), against the estimate finetune prints
 * (docs/reliability.md, "Held-out evaluation batch"). Each run: --steps 1 (evaluations before
 * and after it), vanilla or APEX operators, wasm, under /usr/bin/time; used = peak RSS −
 * baseline (a process that imports every command and initialises wasm, median of 3).
 *
 *     npx tsx scripts/memory-eval-batch.ts [--model stories|10m] [--batch 2] [--eval 2,8,16] [--method vanilla]
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from '../bench/random-checkpoint.js';
import { i32Tensor, writeSafetensors } from '../src/io/safetensors-writer.js';
import { ROOT } from './lib/crash-process.js';

const { values } = parseArgs({ options: { model: { type: 'string', default: 'stories' }, batch: { type: 'string', default: '2' }, eval: { type: 'string', default: '2,8,16' }, method: { type: 'string', default: 'vanilla' }, 'seq-len': { type: 'string', default: '128' } } });
const MB = 1e6;
const BIN = join(ROOT, 'bin', 'run.js');
const TEN_M = join(tmpdir(), 'apex-memory-10m-f32');
const models: Record<string, { path: string; vocab: number }> = { stories: { path: join(ROOT, 'fixtures', 'stories260K'), vocab: 512 }, '10m': { path: TEN_M, vocab: 8192 } };

function timed(args: string[], nodeArgs: string[] = [BIN]): Promise<{ status: number; peakBytes: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile('/usr/bin/time', ['-f', 'MAXRSS_KB=%M', process.execPath, ...nodeArgs, ...args], { maxBuffer: 64 * 2 ** 20, env: { ...process.env, CI: '1', HF_HUB_OFFLINE: '1' } }, (err, stdout, stderr) => {
      const kb = /MAXRSS_KB=(\d+)/.exec(stderr);
      done({ status: err ? 1 : 0, peakBytes: kb ? Number(kb[1]) * 1024 : NaN, stdout, stderr });
    });
  });
}

async function baseline(): Promise<number> {
  const commands = readdirSync(join(ROOT, 'dist', 'commands')).filter((f) => f.endsWith('.js')).map((f) => join(ROOT, 'dist', 'commands', f));
  const code = ["await import('@oclif/core');", ...commands.map((c) => `await import(${JSON.stringify(c)});`),
    `const { selectBackend } = await import(${JSON.stringify(join(ROOT, 'dist', 'model', 'backend.js'))});`, "await selectBackend('wasm');",
    "const tf = await import('@tensorflow/tfjs');", 'tf.tidy(() => tf.matMul(tf.ones([64, 64]), tf.ones([64, 64])).dataSync());'].join('\n');
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) runs.push((await timed([], ['--input-type=module', '-e', code])).peakBytes);
  return runs.sort((a, b) => a - b)[1]!;
}

const model = models[values.model!]!;
if (values.model === '10m' && !existsSync(join(TEN_M, 'model.safetensors'))) await writeRandomCheckpoint(TEN_M, { layers: 8, hidden: 256, heads: 8, kvHeads: 4, intermediate: 688, vocab: 8192 }, 'F32');
const work = mkdtempSync(join(tmpdir(), 'apex-eval-batch-'));
const seqLen = Number(values['seq-len']);
const evals = values.eval!.split(',').map(Number);
// The held-out split is 5% of the sequences: enough of them for the largest evaluation batch.
const n = Math.max(64, 20 * Math.max(...evals) + 20);
const ids = new Int32Array(n * seqLen);
let x = 1;
for (let i = 0; i < ids.length; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; ids[i] = x % model.vocab; }
const idsPath = join(work, 'ids.safetensors');
await writeSafetensors(idsPath, [i32Tensor('input_ids', [n, seqLen], ids)]);
const base = await baseline();
process.stdout.write(`baseline ${(base / MB).toFixed(1)} MB\n| model | method | train batch | eval batch | estimate | used | estimate / used |\n|---|---|---|---|---|---|---|\n`);
for (const e of evals) {
  const out = join(work, `run-${e}`);
  const method = values.method === 'operators' ? ['--method', 'apex', '--setting', 'operators'] : ['--method', values.method!];
  const r = await timed(['finetune', model.path, '-o', out, '--input-ids', idsPath, '--backend', 'wasm', '--seq-len', String(seqLen), '--eval-samples', String(Math.max(...evals)),
    '--batch-size', values.batch!, '--eval-batch-size', String(e), '--steps', '1', ...method, '--no-expand', '--json']);
  if (r.status !== 0) throw new Error(`finetune failed: ${r.stderr.slice(-1500)}`);
  const estimate = (JSON.parse(r.stdout) as { data: { memoryEstimateBytes: number } }).data.memoryEstimateBytes;
  const used = r.peakBytes - base;
  process.stdout.write(`| ${values.model} | ${values.method} | ${values.batch} × ${seqLen} | ${e} × ${seqLen} | ${(estimate / MB).toFixed(0)} MB | ${(used / MB).toFixed(0)} MB | ${(estimate / used).toFixed(2)} |\n`);
  rmSync(out, { recursive: true, force: true });
}
rmSync(work, { recursive: true, force: true });
