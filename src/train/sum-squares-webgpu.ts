/**
 * Σ g² over many tensors on the webgpu backend (the global gradient norm of grad-clip.ts) in
 * ⌈count / 6⌉ launches, plus one when the work is spread over several workgroups.
 *
 * Each launch adds the squares of up to six tensors to a running vector of per-workgroup
 * partial sums: `groups` workgroups of 256 threads walk the six tensors with a grid-wide stride
 * (neighbouring threads read neighbouring elements), each workgroup adds its threads' sums in a
 * tree in workgroup memory, and writes its entry of the vector (the previous launch's entry plus
 * its own). A last launch adds the vector up in one workgroup. The number of workgroups grows
 * with the elements to read (≥ 4,096 per workgroup, at most 1,024 workgroups), so a small
 * model's norm stays one workgroup and one launch per six tensors, while a large model's is read
 * by the whole GPU: one workgroup is one compute unit, which alone reads a few tens of GB/s at
 * best, i.e. a tenth of a second or more per step for a billion parameters.
 *
 * The tfjs-ops route costs three launches per tensor (square, sum, add), and a step has one
 * tensor per trained parameter (≈ 150 with APEX on the benchmark model). Six, because WebGPU
 * guarantees 8 storage buffers per shader stage: the output, the running partial sums and six
 * inputs.
 */
import * as tf from '@tensorflow/tfjs';
import { rowReductionProgram, webgpuKernelRegistration, type FlatProgram, type WebgpuBackendLike } from '../ops/webgpu-programs.js';

const KERNEL = 'ApexSumSquaresWebgpu';
const PER_LAUNCH = 6;
const THREADS = 256;
/** Elements per workgroup below which another workgroup is not worth its start. */
const MIN_PER_GROUP = 4096;
const MAX_GROUPS = 1024;

/** Workgroups for reading `elements` values (1 … MAX_GROUPS). */
export function sumSquaresGroups(elements: number): number {
  return Math.max(1, Math.min(MAX_GROUPS, Math.floor(elements / MIN_PER_GROUP)));
}

function partialsProgram(inputs: number, groups: number): FlatProgram {
  const names = Array.from({ length: inputs }, (_, i) => `G${i}`);
  const passes = names
    .map((g, i) => `for (var k = index; k < uniforms.n${i}; k = k + uniforms.stride) { let x = ${g}[k]; acc = acc + x * x; }`)
    .join('\n');
  return {
    variableNames: ['T', ...names],
    outputShape: [groups],
    shaderKey: `apexSumSquares_${inputs}`,
    dispatchLayout: { x: [0] },
    dispatch: [groups, 1, 1],
    workgroupSize: [THREADS, 1, 1],
    size: true,
    uniforms: `stride : i32, ${names.map((_, i) => `n${i} : i32,`).join(' ')}`,
    getUserCode: () => `
      var<workgroup> partial : array<f32, ${THREADS}>;
      fn main(index : i32) {
        let group = index / ${THREADS};
        let lane = index - group * ${THREADS};
        var acc = 0.0;
        ${passes}
        partial[lane] = acc;
        workgroupBarrier();
        for (var s = ${THREADS / 2}; s > 0; s = s / 2) {
          if (lane < s) { partial[lane] = partial[lane] + partial[lane + s]; }
          workgroupBarrier();
        }
        if (lane == 0) { result[group] = T[group] + partial[0]; }
      }
    `,
  };
}

function sumSquares(backend: WebgpuBackendLike, all: tf.TensorInfo[]): tf.TensorInfo {
  // An empty tensor has no buffer to bind (WebGPU rejects zero-sized bindings) and adds nothing.
  const inputs = all.filter((t) => t.shape.every((d) => d > 0));
  const sizes = inputs.map((t) => t.shape.reduce((a, b) => a * b, 1));
  const groups = sumSquaresGroups(sizes.reduce((a, b) => a + b, 0));
  const fill = tf.getKernel('Fill', 'webgpu')!.kernelFunc as unknown as (args: { backend: unknown; attrs: unknown }) => tf.TensorInfo;
  let partials = fill({ backend, attrs: { shape: [groups], value: 0, dtype: 'float32' } });
  for (let at = 0; at < inputs.length; at += PER_LAUNCH) {
    const chunk = inputs.slice(at, at + PER_LAUNCH);
    const uniforms = [groups * THREADS, ...sizes.slice(at, at + PER_LAUNCH)].map((v) => ({ type: 'int32' as const, data: [v] }));
    const next = backend.runWebGPUProgram(partialsProgram(chunk.length, groups), [partials, ...chunk], 'float32', uniforms);
    backend.disposeData(partials.dataId);
    partials = next;
  }
  if (groups === 1) return { dataId: partials.dataId, shape: [], dtype: 'float32' };
  const total = backend.runWebGPUProgram(
    rowReductionProgram('apexSumSquaresTotal', ['T'], 1, [], ['T[c]'], 'result[0] = sum0;', 'rows : i32, rowLength : i32,'),
    [partials], 'float32', [{ type: 'int32', data: [1] }, { type: 'int32', data: [groups] }],
  );
  backend.disposeData(partials.dataId);
  return total;
}

const register = webgpuKernelRegistration({ [KERNEL]: (backend, inputs) => sumSquares(backend, Object.values(inputs) as tf.TensorInfo[]) });

/** Σ x² over all elements of all `tensors` as a float32 scalar (webgpu only; not differentiable). */
export function sumOfSquaresWebgpu(tensors: readonly tf.Tensor[]): tf.Scalar {
  register();
  return tf.engine().runKernel(KERNEL, [...tensors] as unknown as tf.NamedTensorMap) as tf.Scalar;
}
