/**
 * Σ g² over many tensors on the webgpu backend (the global gradient norm of grad-clip.ts) in
 * ⌈count / 6⌉ launches: each launch adds the squares of up to six tensors to the running total
 * of the launch before, in one workgroup (a strided pass per thread, then a tree in workgroup
 * memory). The tfjs-ops route costs three launches per tensor (square, sum, add), and a step
 * has one tensor per trained parameter (≈ 150 with APEX on the benchmark model). Six, because
 * WebGPU guarantees 8 storage buffers per shader stage: the output, the running total and six
 * inputs.
 */
import * as tf from '@tensorflow/tfjs';
import { webgpuKernelRegistration, type FlatProgram, type WebgpuBackendLike } from '../ops/webgpu-programs.js';

const KERNEL = 'ApexSumSquaresWebgpu';
const PER_LAUNCH = 6;
const THREADS = 256;

function program(inputs: number): FlatProgram {
  const names = Array.from({ length: inputs }, (_, i) => `G${i}`);
  const passes = names
    .map((g, i) => `for (var k = index; k < uniforms.n${i}; k = k + ${THREADS}) { let x = ${g}[k]; acc = acc + x * x; }`)
    .join('\n');
  return {
    variableNames: ['T', ...names],
    outputShape: [],
    shaderKey: `apexSumSquares_${inputs}`,
    dispatchLayout: { x: [] },
    dispatch: [1, 1, 1],
    workgroupSize: [THREADS, 1, 1],
    size: true,
    uniforms: names.map((_, i) => `n${i} : i32,`).join(' '),
    getUserCode: () => `
      var<workgroup> partial : array<f32, ${THREADS}>;
      fn main(index : i32) {
        var acc = 0.0;
        ${passes}
        partial[index] = acc;
        workgroupBarrier();
        for (var s = ${THREADS / 2}; s > 0; s = s / 2) {
          if (index < s) { partial[index] = partial[index] + partial[index + s]; }
          workgroupBarrier();
        }
        if (index == 0) { result[0] = T[0] + partial[0]; }
      }
    `,
  };
}

function sumSquares(backend: WebgpuBackendLike, all: tf.TensorInfo[]): tf.TensorInfo {
  // An empty tensor has no buffer to bind (WebGPU rejects zero-sized bindings) and adds nothing.
  const inputs = all.filter((t) => t.shape.every((d) => d > 0));
  const fill = tf.getKernel('Fill', 'webgpu')!.kernelFunc as unknown as (args: { backend: unknown; attrs: unknown }) => tf.TensorInfo;
  let total = fill({ backend, attrs: { shape: [], value: 0, dtype: 'float32' } });
  for (let at = 0; at < inputs.length; at += PER_LAUNCH) {
    const chunk = inputs.slice(at, at + PER_LAUNCH);
    const next = backend.runWebGPUProgram(program(chunk.length), [total, ...chunk], 'float32', chunk.map((t) => ({ type: 'int32' as const, data: [t.shape.reduce((a, b) => a * b, 1)] })));
    backend.disposeData(total.dataId);
    total = next;
  }
  return total;
}

const register = webgpuKernelRegistration({ [KERNEL]: (backend, inputs) => sumSquares(backend, Object.values(inputs) as tf.TensorInfo[]) });

/** Σ x² over all elements of all `tensors` as a float32 scalar (webgpu only; not differentiable). */
export function sumOfSquaresWebgpu(tensors: readonly tf.Tensor[]): tf.Scalar {
  register();
  return tf.engine().runKernel(KERNEL, [...tensors] as unknown as tf.NamedTensorMap) as tf.Scalar;
}
