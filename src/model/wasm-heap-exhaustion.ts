/**
 * The wasm backend's heap (a 32-bit WebAssembly memory, at most 4 GiB) running out mid-command.
 * apex refuses up front a plan whose tensor estimate is over 90% of it (wasm-heap-limit.ts), but
 * the heap can still run out: it never shrinks and fragments over a long run (one growth step
 * was measured at 1.49 × the live bytes after 2,000 steps of a small model, docs/reliability.md),
 * and an estimate can be low. tfjs-wasm then fails inside an operation with a WebAssembly
 * RuntimeError ("memory access out of bounds": its malloc found no room), and every later
 * operation fails the same way. Told apart from a bug in a kernel by the heap's size at that
 * moment: near its limit.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';

const LIMIT = 4 * 2 ** 30;
/** A heap this large that fails is taken to have run out (it was measured at 3.84 GiB when a 256 MiB allocation failed). */
export const EXHAUSTED_HEAP_BYTES = 3 * 2 ** 30;

/** WebAssembly.RuntimeError (the global is not in this project's TypeScript libs). */
export function isWasmRuntimeError(err: unknown): err is Error {
  const ctor = (globalThis as { WebAssembly?: { RuntimeError?: abstract new (...args: never[]) => Error } }).WebAssembly?.RuntimeError;
  return ctor !== undefined && err instanceof ctor;
}

/** The wasm backend's memory size when it is the active tfjs backend (tfjs loaded only for a WebAssembly error). */
export async function activeWasmHeapBytes(): Promise<number | undefined> {
  try {
    const tf = await import('@tensorflow/tfjs');
    if (tf.getBackend() !== 'wasm') return undefined;
    const module = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm;
    return module?.HEAPU8?.buffer.byteLength;
  } catch {
    return undefined;
  }
}

/** `err` as a resource-limit error (exit 5) when it is the wasm heap running out, else undefined. */
export function wasmHeapExhaustion(err: unknown, heapBytes: number | undefined): ResourceLimitError | undefined {
  if (!isWasmRuntimeError(err) || heapBytes === undefined || heapBytes < EXHAUSTED_HEAP_BYTES) return undefined;
  return new ResourceLimitError(
    `the wasm backend's heap ran out (${formatBytes(heapBytes)} of its ${formatBytes(LIMIT)} limit; ${err.message}): ` +
      'the estimate apex checks before starting was below the limit, but the heap never shrinks and can fragment over a long run. ' +
      'Run it again with less memory per step (a stage with checkpoints continues from the last one: apex finetune --resume, or the same apex run command): ' +
      '--recompute-activations (optimizer.recompute_activations), or a smaller --batch-size with --grad-accum to keep the batch (optimizer.batch_size, optimizer.grad_accum); ' +
      'or use another backend (--backend webgpu, tensorflow or cpu)',
    'WASM_HEAP_EXHAUSTED',
    { cause: err },
  );
}
