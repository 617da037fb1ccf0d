// The wasm heap running out mid-command (fragmentation over a long run, or a low estimate) is a
// resource limit (exit 5) with what to do next, not an internal error; a WebAssembly error with a
// heap far from its limit (a bug in a kernel) stays internal.
import { afterAll, expect, it } from 'vitest';
import { ResourceLimitError } from '../../src/errors.js';
import { selectBackend } from '../../src/model/backend.js';
import { activeWasmHeapBytes, isWasmRuntimeError, wasmHeapExhaustion } from '../../src/model/wasm-heap-exhaustion.js';

afterAll(async () => { await selectBackend('cpu'); });

const oob = () => new (globalThis as unknown as { WebAssembly: { RuntimeError: new (m: string) => Error } }).WebAssembly.RuntimeError('memory access out of bounds');

it('maps a WebAssembly error at a heap near 4 GiB to WASM_HEAP_EXHAUSTED (exit 5) with the way to continue', () => {
  // 4,127,326,208 bytes: the heap measured when tfjs-wasm failed to allocate 256 MiB more.
  const e = wasmHeapExhaustion(oob(), 4_127_326_208);
  expect(e).toBeInstanceOf(ResourceLimitError);
  expect(e).toMatchObject({ exit: 5, code: 'WASM_HEAP_EXHAUSTED' });
  expect(e!.message).toMatch(/^the wasm backend's heap ran out \(4\.13 GB of its 4\.29 GB limit; memory access out of bounds\)/);
  expect(e!.message).toContain('continues from the last one: apex finetune --resume, or the same apex run command');
  expect(e!.message).toContain('--recompute-activations');
  expect(e!.message).toContain('--backend webgpu, tensorflow or cpu');
});

it('leaves other errors alone: a heap far from its limit, no heap (another backend), not a WebAssembly error', () => {
  expect(wasmHeapExhaustion(oob(), 300 * 2 ** 20)).toBeUndefined();
  expect(wasmHeapExhaustion(oob(), undefined)).toBeUndefined();
  expect(wasmHeapExhaustion(new Error('memory access out of bounds'), 4_127_326_208)).toBeUndefined();
  expect(isWasmRuntimeError(oob())).toBe(true);
  expect(isWasmRuntimeError(new RangeError('x'))).toBe(false);
});

it('reads the heap size of the wasm backend when it is the active one', async () => {
  await selectBackend('wasm');
  const bytes = await activeWasmHeapBytes();
  expect(bytes).toBeGreaterThan(0);
  expect(bytes! % 65536).toBe(0); // whole WebAssembly pages
  await selectBackend('cpu');
  expect(await activeWasmHeapBytes()).toBeUndefined();
});
