/**
 * apex's own WebGPU compute programs for tfjs-backend-webgpu, and their registration as tfjs
 * kernels of the `webgpu` backend.
 *
 * Why: at the sizes apex trains, a webgpu step costs what its kernel launches cost, not their
 * arithmetic (docs/gpu.md: on an H100 a step took ≈ 1.2 s at both 2 × 128 and 8 × 256 tokens,
 * for ≈ 2,600 launches). Element-wise chains that tfjs runs as one launch per operation (AdamW's
 * thirteen per parameter, a mixing site's gathers, concats and scales) are here one program each.
 *
 * A program is a plain object of tfjs-backend-webgpu's `WebGPUProgram` shape, run with the
 * backend's own `runWebGPUProgram`, so buffers, pipelines and uniforms stay under its management.
 * tfjs writes the shader's prelude: one `array<f32>` (or `array<i32>`) binding per name in
 * `variableNames`, the output `result`, and a `uniforms` struct holding `size` and the fields of
 * `uniforms`; `main(index)` runs once per output element (a flat dispatch, split by tfjs where
 * it exceeds the device's workgroup count limit).
 *
 * A shader or binding the device rejects does not throw: Dawn drops the command and later reads
 * return stale bytes (webgpu-guards.ts turns that into an error at the next read). So every
 * program here is compared with the cpu backend by bench/gpu-check.ts, part `kernels` (which
 * runs on a software adapter too); two caught there: a zero-size binding, and a WGSL reserved
 * word (`from`) as a variable name.
 */
import * as tf from '@tensorflow/tfjs';

/** One uniform value of a program (tfjs's ProgramUniform entry). */
export interface ProgramUniform {
  readonly type: 'float32' | 'int32';
  readonly data: number[];
}

/** The part of tfjs-backend-webgpu's WebGPUProgram that apex's programs fill in. */
export interface FlatProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  shaderKey: string;
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number];
  readonly size: true;
  readonly uniforms?: string;
  getUserCode(): string;
}

export interface WebgpuBackendLike {
  runWebGPUProgram(program: FlatProgram, inputs: tf.TensorInfo[], outputDtype: tf.DataType, uniforms?: ProgramUniform[], output?: tf.TensorInfo): tf.TensorInfo;
  /** Frees a kernel's intermediate (the backend defers it while queued GPU work still reads it). */
  disposeData(dataId: tf.DataId): void;
}

const WORKGROUP = 128;

/**
 * A program computing one value per element of `outputShape`: `body` is WGSL run with `index`
 * (i32, the flat output index, already checked against the size) in scope and must call
 * `setOutputAtIndex(index, value)` or assign `result[index]`. `key` must identify the WGSL
 * (tfjs caches compiled pipelines by it and the shapes).
 */
export function flatProgram(key: string, variableNames: string[], outputShape: number[], body: string, uniforms?: string, helpers = ''): FlatProgram {
  const size = outputShape.reduce((a, b) => a * b, 1);
  return {
    variableNames,
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(size / WORKGROUP), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    size: true,
    ...(uniforms ? { uniforms } : {}),
    getUserCode: () => `
      ${helpers}
      fn main(index : i32) {
        if (index < uniforms.size) {
          ${body}
        }
      }
    `,
  };
}

/** Float32 uniforms (each JavaScript number rounded to float32, as a tfjs scalar tensor of it would be). */
export function f32Uniform(values: readonly number[]): ProgramUniform[] {
  return values.map((v) => ({ type: 'float32', data: [Math.fround(v)] }));
}

export function i32Uniform(values: readonly number[]): ProgramUniform[] {
  return values.map((v) => ({ type: 'int32', data: [v] }));
}

type WebgpuKernel = (backend: WebgpuBackendLike, inputs: tf.NamedTensorInfoMap, attrs: never) => tf.TensorInfo | tf.TensorInfo[];

/**
 * Registers `kernels` for the webgpu backend, and `gradients` (of those kernels), once: on the
 * first call of the returned function.
 */
export function webgpuKernelRegistration(kernels: Record<string, WebgpuKernel>, gradients: tf.GradConfig[] = []): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    for (const [kernelName, run] of Object.entries(kernels)) {
      if (tf.getKernel(kernelName, 'webgpu')) continue;
      tf.registerKernel({
        kernelName,
        backendName: 'webgpu',
        kernelFunc: ({ inputs, backend, attrs }) => run(backend as unknown as WebgpuBackendLike, inputs, attrs as never),
      });
    }
    for (const gradient of gradients) if (!tf.getGradient(gradient.kernelName)) tf.registerGradient(gradient);
  };
}

export const onWebgpu = (): boolean => tf.getBackend() === 'webgpu';

/** The active webgpu device's largest storage binding in bytes (Infinity where it cannot be read). */
export function maxStorageBindingBytes(): number {
  const device = (tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number } } }).device;
  return device?.limits?.maxStorageBufferBindingSize ?? Infinity;
}

const ROW_THREADS = 64;

/**
 * A program that reduces each of `rows` rows in one workgroup: every thread sums `terms[k]` (WGSL
 * expressions of `row` and `c`, the column) over a strided share of the row's `rowLength` columns,
 * the workgroup adds the partial sums in a tree, and thread 0 runs `finish` (WGSL with `row` and
 * `sum0`, `sum1`, … in scope; it writes `result`). Neighbouring threads read neighbouring columns,
 * so a row is read in coalesced stripes, where one thread per row would stride by a row's length.
 * `uniforms` must declare `rows : i32` and `rowLength : i32`.
 */
export function rowReductionProgram(key: string, variableNames: string[], rows: number, outputShape: number[], terms: string[], finish: string, uniforms: string): FlatProgram {
  const sums = terms.map((_, k) => `sum${k}`);
  return {
    variableNames,
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [rows, 1, 1],
    workgroupSize: [ROW_THREADS, 1, 1],
    size: true,
    uniforms,
    getUserCode: () => `
      ${sums.map((s) => `var<workgroup> ${s}Part : array<f32, ${ROW_THREADS}>;`).join('\n')}
      fn main(index : i32) {
        let row = index / ${ROW_THREADS};
        let lane = index - row * ${ROW_THREADS};
        // Workgroups past the last row (a dispatch split in two dimensions) sum nothing.
        let end = select(0, uniforms.rowLength, row < uniforms.rows);
        ${sums.map((s) => `var ${s}Acc = 0.0;`).join(' ')}
        for (var c = lane; c < end; c = c + ${ROW_THREADS}) {
          ${terms.map((t, k) => `${sums[k]}Acc = ${sums[k]}Acc + (${t});`).join('\n')}
        }
        ${sums.map((s) => `${s}Part[lane] = ${s}Acc;`).join(' ')}
        workgroupBarrier();
        for (var s = ${ROW_THREADS / 2}; s > 0; s = s / 2) {
          if (lane < s) { ${sums.map((x) => `${x}Part[lane] = ${x}Part[lane] + ${x}Part[lane + s];`).join(' ')} }
          workgroupBarrier();
        }
        if (lane == 0 && row < uniforms.rows) {
          ${sums.map((s) => `let ${s} = ${s}Part[0];`).join(' ')}
          ${finish}
        }
      }
    `,
  };
}
