/**
 * Two guards for the webgpu backend, installed when it is activated (backend.ts).
 *
 * 1. A GPU that rejects a command (or runs out of memory) fails silently in WebGPU: Dawn reports the validation error
 *    to the device's `uncapturederror` event (and prints it to stderr), drops the whole command
 *    buffer, and every later read of a tensor computed in it returns stale bytes. That is how
 *    training on an H100 once followed the cpu run for two steps and then parted from it: the
 *    global gradient norm was summed by tf.addN over ~50 gradients, beyond the device's storage
 *    buffers per shader stage (8 by default), and reading the norm back returned the loss read
 *    just before it (docs/gpu.md). The first such error is latched here, and every read through
 *    tensor-read.ts then throws it as a VerificationError (exit 6) instead of returning numbers
 *    that cannot be trusted.
 * 2. tfjs-backend-webgpu's AddN binds all its inputs to one shader; past the device's limit the
 *    kernel cannot run. It is replaced by one that adds in chunks within the limit.
 */
import * as tf from '@tensorflow/tfjs';
import { ResourceLimitError, VerificationError } from '../errors.js';

interface GpuErrorEventLike {
  /** A GPUValidationError, GPUOutOfMemoryError or GPUInternalError (told apart by class name). */
  error?: { message?: string; constructor?: { name?: string } };
}

export interface GpuDeviceLike {
  limits: { maxStorageBuffersPerShaderStage: number };
  onuncapturederror: ((event: GpuErrorEventLike) => void) | null;
  /** Resolves when the device is lost (driver reset, GPU removed, out of memory) or destroyed. */
  lost?: Promise<{ reason?: string; message?: string }>;
}

interface WebgpuBackendLike {
  device: GpuDeviceLike;
  disposeData(dataId: unknown): void;
}

type KernelFuncLike = (args: { inputs: tf.TensorInfo[]; backend: unknown; attrs?: unknown }) => tf.TensorInfo;

let firstError: { message: string; outOfMemory: boolean } | undefined;
let guardedDevice: GpuDeviceLike | undefined;

/**
 * Throws when the GPU has rejected a command since the guards were installed: the values read
 * after it may be stale. Called after every read of a tensor (tensor-read.ts). Running out of
 * GPU memory is a resource limit (exit 5, GPU_OUT_OF_MEMORY) with what to lower; anything else a
 * failed verification (exit 6, GPU_VALIDATION).
 */
export function assertNoGpuError(): void {
  if (firstError === undefined) return;
  if (firstError.outOfMemory) {
    throw new ResourceLimitError(
      `the GPU ran out of memory, so results computed since then cannot be trusted: ${firstError.message}; ` +
        'lower --batch-size or --seq-len (use --grad-accum to keep the batch), or use another backend (--backend wasm, tensorflow or cpu)',
      'GPU_OUT_OF_MEMORY',
    );
  }
  throw new VerificationError(
    `the GPU rejected a command, so results computed since then cannot be trusted: ${firstError.message} ` +
      `(rerun with --backend wasm, and report this with the message above)`,
    'GPU_VALIDATION',
  );
}

/**
 * The sum of `inputs` by `addN` calls of at most `limit` inputs each: partial sums of chunks,
 * then sums of the partial sums, until one is left. Intermediate results are disposed with
 * `dispose`. The summation order differs from one AddN only in how float32 rounding groups.
 */
export function chunkedAddN(inputs: tf.TensorInfo[], limit: number, addN: (chunk: tf.TensorInfo[]) => tf.TensorInfo, dispose: (t: tf.TensorInfo) => void): tf.TensorInfo {
  if (!(limit >= 2)) throw new RangeError(`chunkedAddN: limit must be at least 2, got ${limit}`);
  if (inputs.length <= limit) return addN(inputs);
  let level = inputs;
  while (level.length > limit) {
    const next: tf.TensorInfo[] = [];
    for (let i = 0; i < level.length; i += limit) {
      const chunk = level.slice(i, i + limit);
      // A lone trailing tensor is carried over as it is.
      next.push(chunk.length === 1 ? chunk[0]! : addN(chunk));
    }
    for (const t of level) if (!inputs.includes(t) && !next.includes(t)) dispose(t);
    level = next;
  }
  const out = addN(level);
  for (const t of level) if (!inputs.includes(t)) dispose(t);
  return out;
}

/**
 * Latches the first uncaptured error of `device`, or its loss (a lost device runs nothing more
 * and its reads cannot be trusted either), replacing any earlier watch and clearing the latch
 * when the device is a new one. A device destroyed on purpose (reason `destroyed`) is not an error.
 */
export function watchGpuErrors(device: GpuDeviceLike): void {
  if (guardedDevice === device) return;
  guardedDevice = device;
  firstError = undefined;
  const oneLine = (message: string) => message.trim().replace(/\s*\n\s*/g, ' / ');
  device.onuncapturederror = (event) => {
    firstError ??= { message: oneLine(event.error?.message ?? String(event)), outOfMemory: event.error?.constructor?.name === 'GPUOutOfMemoryError' };
  };
  void device.lost?.then((info) => {
    if (guardedDevice !== device || info.reason === 'destroyed') return;
    firstError ??= { message: `the GPU device was lost (${info.reason ?? 'unknown reason'}): ${oneLine(info.message ?? '')}`, outOfMemory: false };
  });
}

/** Installs both guards on the active webgpu backend (once per device). */
export function installWebgpuGuards(): void {
  const backend = tf.backend() as unknown as WebgpuBackendLike;
  const device = backend.device;
  if (!device || guardedDevice === device) return;
  watchGpuErrors(device);
  const original = tf.getKernel('AddN', 'webgpu');
  if (!original) return;
  const addN = original.kernelFunc as unknown as KernelFuncLike;
  // One binding is the output's.
  const limit = Math.max(2, device.limits.maxStorageBuffersPerShaderStage - 1);
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({
    ...original,
    kernelFunc: ((args: { inputs: tf.TensorInfo[]; backend: WebgpuBackendLike; attrs?: unknown }) =>
      chunkedAddN(args.inputs, limit, (chunk) => addN({ ...args, inputs: chunk }), (t) => args.backend.disposeData(t.dataId))) as unknown as tf.KernelFunc,
  });
}
