/**
 * Memory access for apex's own tfjs kernels on the JavaScript-side backends (`cpu`, `wasm`):
 * allocate float32 outputs, then read the inputs and fill the outputs in plain loops. Outputs
 * are allocated before any input is read: on wasm an allocation can grow the heap, which
 * detaches views taken before it.
 */
import * as tf from '@tensorflow/tfjs';
import { rowSimd, type RowSimd } from './row-simd.js';
import type { WasmMemory } from './wasm-encoding.js';

export const JS_BACKENDS = ['cpu', 'wasm'] as const;
export type JsBackendName = (typeof JS_BACKENDS)[number];

/** Whether the current backend runs apex's JavaScript kernels (cpu, wasm). */
export const onJsBackend = (): boolean => (JS_BACKENDS as readonly string[]).includes(tf.getBackend());

export type KernelValues = Float32Array | Int32Array;

export interface KernelIo {
  outputs(shapes: number[][], inputs: tf.TensorInfo[], fill: (outs: Float32Array[], ins: KernelValues[]) => void): tf.TensorInfo[];
  /**
   * Runs one of the backend's own kernels (BatchMatMul, Transpose) on temporaries directly,
   * without the engine: no tape, no tracking, none of its per-op cost. What it returns, like
   * an `outputs` result that is not returned, must be freed with `release`.
   */
  call(kernelName: string, inputs: Record<string, tf.TensorInfo>, attrs?: Record<string, unknown>): tf.TensorInfo;
  release(...infos: tf.TensorInfo[]): void;
  /**
   * On wasm: SIMD passes over the backend's memory (row-simd.ts), that memory (for other SIMD
   * modules to bind to, e.g. train/adamw-simd.ts) and the byte address of a tensor's data there.
   */
  readonly simd?: { readonly rows: RowSimd; readonly memory: WasmMemory; address(t: tf.TensorInfo): number };
}

/** The same data under another shape of the same size (row-major reinterpretation, no copy). */
export const reshaped = (t: tf.TensorInfo, shape: number[]): tf.TensorInfo => ({ dataId: t.dataId, shape, dtype: t.dtype });

interface CpuBackendLike {
  data: { get(dataId: unknown): { values: KernelValues } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
  disposeData(dataId: unknown): void;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): KernelValues;
  disposeData(dataId: unknown): void;
  dataIdMap: { get(dataId: unknown): { memoryOffset: number } };
  wasm: { asm?: { memory?: WasmMemory } };
}

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

function backendCalls(backendName: JsBackendName, backend: { disposeData(dataId: unknown): void }): Pick<KernelIo, 'call' | 'release'> {
  return {
    call: (kernelName, inputs, attrs = {}) => {
      const kernel = tf.getKernel(kernelName, backendName);
      if (!kernel) throw new Error(`kernel ${kernelName} is not registered for ${backendName}`);
      return kernel.kernelFunc({ inputs, backend: backend as tf.KernelBackend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
    },
    release: (...infos) => {
      for (const info of infos) backend.disposeData(info.dataId);
    },
  };
}

const simdByMemory = new WeakMap<WasmMemory, RowSimd | null>();

/**
 * The SIMD passes for the wasm backend's memory, when they can run there: not on a shared
 * memory (tfjs-wasm's multi-threaded build, which our module's plain memory import cannot
 * take), nor where instantiating fails; the JavaScript loops serve then.
 */
function withRowSimd(b: WasmBackendLike): Pick<KernelIo, 'simd'> {
  const memory = b.wasm.asm?.memory;
  if (!memory) return {};
  let rows = simdByMemory.get(memory);
  if (rows === undefined) {
    const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
    try {
      rows = shared ? null : rowSimd(memory);
    } catch {
      rows = null;
    }
    simdByMemory.set(memory, rows);
  }
  return rows ? { simd: { rows, memory, address: (t) => b.dataIdMap.get(t.dataId).memoryOffset } } : {};
}

export function kernelIo(backendName: JsBackendName, backend: unknown): KernelIo {
  if (backendName === 'cpu') {
    const b = backend as CpuBackendLike;
    return {
      outputs: (shapes, inputs, fill) => {
        const outs = shapes.map((s) => new Float32Array(size(s)));
        fill(outs, inputs.map((t) => b.data.get(t.dataId).values));
        return outs.map((o, i) => b.makeTensorInfo(shapes[i]!, 'float32', o));
      },
      ...backendCalls(backendName, b),
    };
  }
  const b = backend as WasmBackendLike;
  return {
    outputs: (shapes, inputs, fill) => {
      const infos = shapes.map((s) => b.makeOutput(s, 'float32'));
      fill(infos.map((i) => b.typedArrayFromHeap(i) as Float32Array), inputs.map((t) => b.typedArrayFromHeap(t)));
      return infos;
    },
    ...backendCalls(backendName, b),
    ...withRowSimd(b),
  };
}

/** Whether the current backend is wasm with apex's SIMD passes available (KernelIo.simd). */
export function wasmSimdAvailable(): boolean {
  return tf.getBackend() === 'wasm' && kernelIo('wasm', tf.backend()).simd !== undefined;
}

/**
 * A JavaScript kernel: reads its inputs and fills its outputs through `io`. Returns one
 * output, or several (a one-element list is returned as that element).
 */
export type JsKernel<Attrs = Record<string, never>> = (
  io: KernelIo,
  inputs: Record<string, tf.TensorInfo> & tf.TensorInfo[],
  attrs: Attrs,
) => tf.TensorInfo | tf.TensorInfo[];

/**
 * Registers `kernels` (name → kernel) on every JavaScript-side backend the first time the
 * returned function is called; later calls do nothing.
 */
export function jsKernelRegistration(kernels: Record<string, JsKernel<never>>): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    for (const backendName of JS_BACKENDS) {
      for (const [kernelName, run] of Object.entries(kernels)) {
        tf.registerKernel({
          kernelName, backendName,
          kernelFunc: ((a: { inputs: Record<string, tf.TensorInfo> & tf.TensorInfo[]; backend: unknown; attrs: never }) => {
            const out = run(kernelIo(backendName, a.backend), a.inputs, a.attrs);
            return Array.isArray(out) && out.length === 1 ? out[0]! : out;
          }) as unknown as tf.KernelFunc,
        });
      }
    }
  };
}
