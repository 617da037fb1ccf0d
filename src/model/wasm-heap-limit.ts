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
import { fewerTensorsAdvice, type TrainingChoice } from './memory-advice.js';

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

/**
 * A training estimate's tensor memory with the part of it that does not depend on the batch:
 * the weights and the gradients and optimizer state (stage-memory.ts), before the heap's slack.
 */
export interface WasmHeapNeed {
  readonly tfHeapBytes: number;
  readonly weightBytes: number;
  readonly optimizerBytes: number;
}

/** The heap's growth slack the training estimate's tfHeapBytes includes (stage-memory.ts). */
const HEAP_GROWTH = 1.15;

const ANOTHER_BACKEND = 'use another backend (--backend webgpu, tensorflow or cpu)';
/** What a training plan over the heap is told by default (its batch-dependent part can make it fit). */
export const WASM_HEAP_ADVICE = `lower --batch-size or --seq-len (use --grad-accum to keep the batch), or ${ANOTHER_BACKEND}`;

/**
 * Throws ResourceLimitError (exit 5) when `backend` is wasm and the tf-heap estimate does not
 * fit. Given a training estimate whose weights and optimizer state alone (with the heap's
 * slack) exceed the usable heap, the advice leaves out --batch-size / --seq-len, which cannot help.
 */
export function checkWasmHeap(
  backend: string,
  need: number | WasmHeapNeed,
  what: string,
  advice = WASM_HEAP_ADVICE,
  training?: TrainingChoice,
): void {
  const tfHeapBytes = typeof need === 'number' ? need : need.tfHeapBytes;
  if (backend !== 'wasm' || tfHeapBytes <= WASM_HEAP_USABLE_BYTES) return;
  const fixed = typeof need === 'number' ? 0 : Math.round(HEAP_GROWTH * (need.weightBytes + need.optimizerBytes));
  const remedy =
    fixed > WASM_HEAP_USABLE_BYTES
      ? `the weights, gradients and optimizer state alone need about ${formatBytes(fixed)} of it, which a smaller batch or sequence length does not change: ` +
        `${ANOTHER_BACKEND}${fewerWithin(need as WasmHeapNeed, training)}`
      : advice;
  throw new ResourceLimitError(
    `${what} needs about ${formatBytes(tfHeapBytes)} of tensor memory, more than the wasm backend's heap can hold ` +
      `(limit ${formatBytes(WASM_HEAP_LIMIT_BYTES)}, of which ${formatBytes(WASM_HEAP_USABLE_BYTES)} usable for an estimate); ${remedy}`,
    'MEMORY_WASM_HEAP',
  );
}

/**
 * Selects the requested backend (as the command would) and applies checkWasmHeap to it. Pass
 * the whole training estimate (not only its tfHeapBytes) for the advice to know whether a
 * smaller batch can help.
 */
export async function refuseOverWasmHeap(requested: BackendRequest, need: number | WasmHeapNeed, what: string, training?: TrainingChoice, advice?: string): Promise<void> {
  checkWasmHeap((await selectBackend(requested)).name, need, what, advice, training);
}

/** ", or train fewer tensors (…)" where that can bring the need under the heap, else "". */
function fewerWithin(need: WasmHeapNeed, training: TrainingChoice | undefined): string {
  if (HEAP_GROWTH * need.weightBytes >= WASM_HEAP_USABLE_BYTES) return '';
  const fewer = fewerTensorsAdvice(training, 'cli');
  return fewer ? `, or ${fewer}` : '';
}
