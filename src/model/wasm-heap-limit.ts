/**
 * The wasm backend's heap is a 32-bit WebAssembly memory: it cannot grow past 4 GiB, and a
 * command that needs more aborts the process ("Aborted()", exit 1) after whatever it has
 * already done. A command whose tf-heap estimate exceeds the usable part of that limit is
 * refused up front instead (ResourceLimitError, exit 5). Only tensors count: JavaScript-side
 * buffers (decoded weights, hidden states kept between layers) live outside the wasm memory.
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import { selectBackend, type BackendRequest } from './backend.js';

export const WASM_HEAP_LIMIT_BYTES = 4 * 2 ** 30;
/**
 * Fraction of the limit an estimate may reach. The training estimate's tfHeapBytes already
 * includes the heap's growth slack (1.15 × the live bytes); the live bytes are estimated within
 * −1 % / +5 % of the measured live allocations and the heap's high-water mark reached up to 1.20 ×
 * them (docs/reliability.md), so an estimate of 0.9 × 4 GiB can already need the whole heap.
 */
export const WASM_HEAP_USABLE_FRACTION = 0.9;
export const WASM_HEAP_USABLE_BYTES = Math.floor(WASM_HEAP_USABLE_FRACTION * WASM_HEAP_LIMIT_BYTES);

/**
 * Bytes of tensor memory (an estimate's tfHeapBytes) a plan on `backend` may reach: the usable
 * part of the wasm heap, unlimited elsewhere. A forward pass plans its chunks within it, so a
 * --max-memory above the heap makes smaller chunks on wasm instead of an abort.
 */
export function tfHeapAllowance(backend: string): number {
  return backend === 'wasm' ? WASM_HEAP_USABLE_BYTES : Infinity;
}

/** Throws ResourceLimitError (exit 5) when `backend` is wasm and the tf-heap estimate does not fit. */
export function checkWasmHeap(
  backend: string,
  tfHeapBytes: number,
  what: string,
  advice = 'lower --batch-size or --seq-len (use --grad-accum to keep the batch), or use another backend (--backend webgpu, tensorflow or cpu)',
): void {
  if (backend !== 'wasm' || tfHeapBytes <= WASM_HEAP_USABLE_BYTES) return;
  throw new ResourceLimitError(
    `${what} needs about ${formatBytes(tfHeapBytes)} of tensor memory, more than the wasm backend's heap can hold ` +
      `(limit ${formatBytes(WASM_HEAP_LIMIT_BYTES)}, of which ${formatBytes(WASM_HEAP_USABLE_BYTES)} usable for an estimate); ${advice}`,
    'MEMORY_WASM_HEAP',
  );
}

/** Selects the requested backend (as the command would) and applies checkWasmHeap to it. */
export async function refuseOverWasmHeap(requested: BackendRequest, tfHeapBytes: number, what: string): Promise<void> {
  checkWasmHeap((await selectBackend(requested)).name, tfHeapBytes, what);
}
