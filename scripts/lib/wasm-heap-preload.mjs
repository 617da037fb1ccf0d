// Preload for scripts/wasm-heap-near-limit.ts: makes the wasm backend first (the command's
// selectBackend then finds it), wraps its _malloc/_free to count live bytes (as
// scripts/run-resources.ts does), and writes at exit, to $APEX_HEAP_STATS, the heap's size
// (WebAssembly memory byteLength, it never shrinks), the live-bytes peak, the heap size at every
// growth with the live bytes then, and any malloc that returned 0 (the heap ran out). Addresses
// are keyed unsigned: above 2 GiB the raw export returns them negative, and tfjs frees them
// `>>> 0` (scripts/run-resources.ts and eval-live-bytes.ts keyed them signed, and so missed those
// frees, until they were changed to unsigned keys too).
//
//     APEX_HEAP_STATS=stats.json node --import ./scripts/lib/wasm-heap-preload.mjs bin/run.js finetune …
import { writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../dist/model/backend.js';

await selectBackend('wasm');
const wasm = tf.backend().wasm;
wasm._free(wasm._malloc(8)); // the first call replaces _malloc/_free with the raw exports
const sizes = new Map();
let live = 0;
let peak = 0;
let peakAtHeap = 0;
let mallocs = 0;
let largest = 0;
const started = Date.now();
const heapNow = () => wasm.HEAPU8.buffer.byteLength;
let heap = heapNow();
const growths = [{ atMs: 0, heapBytes: heap, liveBytes: 0, request: 0 }];
const failures = [];
const malloc = wasm._malloc.bind(wasm);
const free = wasm._free.bind(wasm);
wasm._malloc = (n) => {
  let p;
  try { p = malloc(n); } catch (e) { failures.push({ atMs: Date.now() - started, request: n, liveBytes: live, heapBytes: heapNow(), peakBytes: peak, threw: String(e) }); throw e; }
  p >>>= 0; // an address above 2 GiB comes back negative (tfjs does the same `>>> 0`)
  mallocs++;
  if (n > largest) largest = n;
  const h = heapNow();
  if (h !== heap) { heap = h; growths.push({ atMs: Date.now() - started, heapBytes: h, liveBytes: live + n, peakBytes: Math.max(peak, live + n), request: n }); }
  if (p === 0 && n > 0) { failures.push({ atMs: Date.now() - started, request: n, liveBytes: live, heapBytes: h, peakBytes: peak }); return p; }
  sizes.set(p, n);
  live += n;
  if (live > peak) { peak = live; peakAtHeap = h; }
  return p;
};
wasm._free = (p) => { const k = p >>> 0; live -= sizes.get(k) ?? 0; sizes.delete(k); free(p); };
process.on('exit', (code) => {
  const out = process.env.APEX_HEAP_STATS;
  const stats = { exitCode: code, heapBytes: heapNow(), livePeakBytes: peak, heapAtLivePeakBytes: peakAtHeap, liveAtExitBytes: live, largestMallocBytes: largest, mallocs, growths, failures };
  if (out) writeFileSync(out, `${JSON.stringify(stats, null, 1)}\n`);
});
