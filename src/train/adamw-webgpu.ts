/**
 * AdamW's update of one parameter on the webgpu backend in two launches (both new moments, then
 * the new parameter from them) instead of the thirteen element-wise tfjs operations of adamw.ts,
 * with the same formula and order. The two moments live in one tensor [2, size] (first, then
 * second), so that one launch writes both; a row mask [R, 1], column mask [1, C] or full-shape mask is
 * read in the same launches (entries whose mask is 0 see a zero gradient and keep their value,
 * as on the other routes). Launches, not arithmetic, are what a webgpu step costs at apex's
 * sizes (webgpu-programs.ts), and APEX adds many small tensors.
 *
 * Not bit-identical to the tfjs-ops route on the same GPU: a shader compiler may contract a
 * product and a sum into one fused multiply-add, which separate launches cannot. The GPU check
 * (bench/gpu-check.ts, part `kernels`) compares this route against the cpu backend.
 */
import * as tf from '@tensorflow/tfjs';
import { f32Uniform, flatProgram, i32Uniform, webgpuKernelRegistration, type WebgpuBackendLike } from '../ops/webgpu-programs.js';
import type { AdamWStepScalars, MaskLayout } from './train-kernels.js';

const KERNEL = 'ApexAdamWWebgpu';

// Whether element `e` trains (mask modes 0–3).
const KEEP = ['true', 'K[e / uniforms.cols] > 0.0', 'K[e % uniforms.cols] > 0.0', 'K[e] > 0.0'];
const UNIFORMS = 'b1 : f32, c1 : f32, b2 : f32, c2 : f32, decay : f32, sc2 : f32, eps : f32, stepSize : f32, cols : i32, n : i32,';

type Attrs = AdamWStepScalars & MaskLayout;

function adamwWebgpu(backend: WebgpuBackendLike, inputs: tf.NamedTensorInfoMap, a: Attrs): tf.TensorInfo[] {
  const { p, g, mv, keep, scale } = inputs as Record<string, tf.TensorInfo | undefined>;
  const shape = p!.shape as number[];
  const n = shape.reduce((x, y) => x * y, 1);
  const masked = a.mode !== 0;
  const scaled = scale !== undefined;
  const decays = a.decayFactor !== 1;
  const uniforms = [
    ...f32Uniform([a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.decayFactor, a.sqrtCorrection2, a.epsilon, a.stepSize]),
    ...i32Uniform([a.cols, n]),
  ];
  const keepExpr = KEEP[a.mode]!;
  const mask = masked ? { names: ['K'], inputs: [keep!] } : { names: [], inputs: [] };
  // The gradient of element e as the other routes see it: scaled first (tf.mul), then masked.
  const given = scaled ? 'G[e] * S[0]' : 'G[e]';
  const grad = masked ? `select(0.0, ${given}, ${keepExpr})` : given;
  // Launch 1, over [2, n]: the new moments in adamw.ts's order, m·β1 + g·(1 − β1) in row 0 and
  // v·β2 + g²·(1 − β2) in row 1.
  const moments = flatProgram(`apexAdamW_mv_${a.mode}${scaled ? 's' : ''}`, ['MV', 'G', ...(scaled ? ['S'] : []), ...mask.names], [2, n], `
    let second = index >= uniforms.n;
    let e = select(index, index - uniforms.n, second);
    let gi = ${grad};
    if (second) { result[index] = MV[index] * uniforms.b2 + (gi * gi) * uniforms.c2; } else { result[index] = MV[index] * uniforms.b1 + gi * uniforms.c1; }`, UNIFORMS);
  const mv1 = backend.runWebGPUProgram(moments, [mv!, g!, ...(scaled ? [scale] : []), ...mask.inputs], 'float32', uniforms);
  // Launch 2: the parameter from the new moments.
  const decayed = decays ? 'P[e] * uniforms.decay' : 'P[e]';
  const update = `${decayed} - (MV[e] / (sqrt(MV[uniforms.n + e]) / uniforms.sc2 + uniforms.eps)) * uniforms.stepSize`;
  const parameter = flatProgram(`apexAdamW_p_${a.mode}${decays ? 'd' : ''}`, ['P', 'MV', ...mask.names], shape, `
    let e = index;
    result[index] = ${masked ? `select(P[e], ${update}, ${keepExpr})` : update};`, UNIFORMS);
  const p1 = backend.runWebGPUProgram(parameter, [p!, mv1, ...mask.inputs], 'float32', uniforms);
  return [p1, mv1];
}

const register = webgpuKernelRegistration({ [KERNEL]: (backend, inputs, attrs: Attrs) => adamwWebgpu(backend, inputs, attrs) });

/**
 * [p, mv] after one AdamW step (new tensors; the webgpu backend only): `mv` holds the first
 * moments then the second, [2, size] (the webgpu slots' packed layout, adamw.ts). `mask` as in
 * OptimizedParameter, read per `layout`; `gradScale` (scalar) multiplies the gradient first.
 */
export function adamwWebgpuStep(
  p: tf.Tensor, g: tf.Tensor, mv: tf.Tensor, mask: tf.Tensor | undefined, gradScale: tf.Scalar | undefined,
  scalars: AdamWStepScalars, layout: MaskLayout,
): [tf.Tensor, tf.Tensor] {
  register();
  const inputs: tf.NamedTensorMap = { p, g, mv, ...(layout.mode !== 0 && mask ? { keep: mask } : {}), ...(gradScale ? { scale: gradScale } : {}) };
  return tf.engine().runKernel(KERNEL, inputs, { ...scalars, ...layout } as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor];
}
