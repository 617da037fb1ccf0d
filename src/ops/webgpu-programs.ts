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

/** Registers `kernels` for the webgpu backend once (on first call of the returned function). */
export function webgpuKernelRegistration(kernels: Record<string, WebgpuKernel>): () => void {
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
  };
}

export const onWebgpu = (): boolean => tf.getBackend() === 'webgpu';
