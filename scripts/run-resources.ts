/**
 * What one `apex run` holds at each stage boundary (and every N steps), to find what grows per
 * stage or per step outside the tf engine's tensor count (test/pipeline/run-tensor-leak.test.ts):
 * RSS, the JavaScript heap and external memory (after a full gc, so only what is retained shows),
 * the wasm backend's heap (it never shrinks) and its live bytes (by wrapping _malloc/_free, as
 * scripts/eval-live-bytes.ts), open files, threads, active handles, process and abort listeners,
 * and on webgpu the backend's buffer pool and compiled pipelines. One JSON line per sample.
 *
 *     node --expose-gc --import tsx scripts/run-resources.ts run.yaml [--steps-every 100] [--runs 2] [key=value ...]
 *
 * The run folder is started over (--force) each time. Flat from stage 2 on is good; growth per
 * stage or per step is a finding (docs/reliability.md, "Nothing left behind between stages").
 */
import * as tf from '@tensorflow/tfjs';
import { getEventListeners } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import { runPipeline } from '../src/pipeline/run.js';
import { resolveConfig } from '../src/run/config.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'steps-every': { type: 'string', default: '0' }, runs: { type: 'string', default: '1' } } });
const file = resolve(positionals[0] ?? 'run.yaml');
const overrides = positionals.slice(1);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) process.stderr.write('warning: run with node --expose-gc, or dead objects count as retained\n');

// The wasm backend made first, so that the run's selectBackend finds it and _malloc is wrapped.
await selectBackend('wasm');
type WasmModule = { _malloc(n: number): number; _free(p: number): void; HEAPU8: Uint8Array };
const wasm = (tf.backend() as unknown as { wasm: WasmModule }).wasm;
wasm._free(wasm._malloc(8)); // the first call replaces _malloc/_free with the raw exports
const sizes = new Map<number, number>();
let live = 0;
let peak = 0;
const malloc = wasm._malloc.bind(wasm);
const free = wasm._free.bind(wasm);
wasm._malloc = (n) => { const p = malloc(n); sizes.set(p >>> 0, n); live += n; peak = Math.max(peak, live); return p; };
wasm._free = (p) => { live -= sizes.get(p >>> 0) ?? 0; sizes.delete(p >>> 0); free(p); };

const abort = new AbortController();
const MB = (x: number) => Math.round(x / 1e4) / 100;
const count = (dir: string) => (existsSync(dir) ? readdirSync(dir).length : null);
process.on('warning', (w) => console.log(JSON.stringify({ warning: `${w.name}: ${w.message}` })));

function sample(label: string): void {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  const handles: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) handles[r] = (handles[r] ?? 0) + 1;
  const backend = tf.backend() as unknown as { bufferManager?: { numFreeBuffers: number; numBytesAllocated: number }; pipelineCache?: object };
  console.log(JSON.stringify({
    label,
    rssMB: MB(m.rss), heapUsedMB: MB(m.heapUsed), externalMB: MB(m.external), arrayBuffersMB: MB(m.arrayBuffers),
    wasmHeapMB: MB(wasm.HEAPU8.buffer.byteLength), wasmLiveMB: MB(live), wasmPeakMB: MB(peak),
    tensors: tf.memory().numTensors,
    openFiles: count('/proc/self/fd'), threads: count('/proc/self/task'), handles,
    listeners: Object.fromEntries(['SIGINT', 'SIGTERM', 'exit', 'warning'].map((e) => [e, process.listenerCount(e)])),
    abortListeners: getEventListeners(abort.signal, 'abort').length,
    ...(backend.bufferManager ? { gpuFreeBuffers: backend.bufferManager.numFreeBuffers, gpuAllocatedMB: MB(backend.bufferManager.numBytesAllocated) } : {}),
    ...(backend.pipelineCache ? { gpuPipelines: Object.keys(backend.pipelineCache).length } : {}),
  }));
}

const stepsEvery = Number(values['steps-every']);
const sampledSteps = new Set<string>();
sample('start');
for (let r = 0; r < Number(values.runs); r++) {
  const resolved = await resolveConfig({ file, overrides, cwd: dirname(file) });
  await runPipeline({
    resolved,
    force: true,
    signal: abort.signal,
    log: (m) => {
      process.stderr.write(`${m}\n`);
      if (/stage \d+ of \d+: training$|held-out perplexity of (stages|baseline)|held-out perplexity of the base|advantage assessment/.test(m)) sample(m);
    },
    status: (m) => {
      const step = /^(.+ stage \d+): step (\d+)\//.exec(m);
      if (stepsEvery > 0 && step && Number(step[2]) % stepsEvery === 0 && !sampledSteps.has(`${r} ${step[1]} ${step[2]}`)) {
        sampledSteps.add(`${r} ${step[1]} ${step[2]}`);
        sample(`${step[1]} step ${step[2]}`);
      }
    },
  });
  sample(`end of run ${r + 1}`);
}
