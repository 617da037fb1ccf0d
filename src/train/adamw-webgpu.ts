/**
 * AdamW's update of one parameter on the webgpu backend in three launches (new m, new v, then
 * the new parameter from them) instead of the thirteen element-wise tfjs operations of adamw.ts,
 * with the same formula and order; a row mask [R, 1], column mask [1, C] or full-shape mask is
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
import type { AdamWStepScalars } from './train-kernels.js';

const KERNEL = 'ApexAdamWWebgpu';

/** How the mask indexes: none, one flag per row, per column, or per element. */
export type WebgpuMaskMode = 0 | 1 | 2 | 3;

export interface AdamWWebgpuLayout {
  readonly mode: WebgpuMaskMode;
  /** Row length (columns) of the parameter viewed as [rows, cols]; used by modes 1 and 2. */
  readonly cols: number;
}

/** The mask layout the kernel reads, or null where it cannot (other broadcasts). */
export function adamwWebgpuLayout(shape: readonly number[], mask: readonly number[] | undefined): AdamWWebgpuLayout | null {
  const size = shape.reduce((a, b) => a * b, 1);
  const cols = shape.length === 0 ? 1 : shape[shape.length - 1]!;
  if (mask === undefined) return { mode: 0, cols };
  if (mask.length !== shape.length) return null;
  if (mask.every((d, i) => d === shape[i])) return { mode: 3, cols };
  if (shape.length !== 2) return null;
  const [R, C] = shape as [number, number];
  if (mask[0] === R && mask[1] === 1) return { mode: 1, cols: C };
  if (mask[0] === 1 && mask[1] === C) return { mode: 2, cols: C };
  return size === 0 ? { mode: 0, cols } : null;
}

const KEEP = ['true', 'K[index / uniforms.cols] > 0.0', 'K[index % uniforms.cols] > 0.0', 'K[index] > 0.0'];
const UNIFORMS = 'b1 : f32, c1 : f32, b2 : f32, c2 : f32, decay : f32, sc2 : f32, eps : f32, stepSize : f32, cols : i32,';

interface Attrs extends AdamWStepScalars {
  readonly mode: WebgpuMaskMode;
  readonly cols: number;
}

function adamwWebgpu(backend: WebgpuBackendLike, inputs: tf.NamedTensorInfoMap, a: Attrs): tf.TensorInfo[] {
  const { p, g, m, v, keep, scale } = inputs as Record<string, tf.TensorInfo | undefined>;
  const shape = p!.shape as number[];
  const masked = a.mode !== 0;
  const k = masked ? ['K'] : [];
  const scaled = scale !== undefined;
  const decays = a.decayFactor !== 1;
  const uniforms = [
    ...f32Uniform([a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.decayFactor, a.sqrtCorrection2, a.epsilon, a.stepSize]),
    ...i32Uniform([a.cols]),
  ];
  const keepExpr = KEEP[a.mode]!;
  // The gradient as the other routes see it: scaled first (tf.mul), then masked.
  const given = scaled ? 'G[index] * S[0]' : 'G[index]';
  const grad = masked ? `select(0.0, ${given}, ${keepExpr})` : given;
  const run = (key: string, names: string[], ins: tf.TensorInfo[], body: string) =>
    backend.runWebGPUProgram(flatProgram(`apexAdamW_${key}_${a.mode}`, [...names, ...k], shape, body, UNIFORMS), [...ins, ...(masked ? [keep!] : [])], 'float32', uniforms);
  const withScale = (names: string[]) => (scaled ? [...names, 'S'] : names);
  const gradInputs = scaled ? [g!, scale] : [g!];
  // The order of adamw.ts's operations: m·β1 + g·(1 − β1); v·β2 + g²·(1 − β2).
  const m1 = run(`m${scaled ? 's' : ''}`, withScale(['M', 'G']), [m!, ...gradInputs], `let gi = ${grad}; result[index] = M[index] * uniforms.b1 + gi * uniforms.c1;`);
  const v1 = run(`v${scaled ? 's' : ''}`, withScale(['V', 'G']), [v!, ...gradInputs], `let gi = ${grad}; result[index] = V[index] * uniforms.b2 + (gi * gi) * uniforms.c2;`);
  const decayed = decays ? 'P[index] * uniforms.decay' : 'P[index]';
  const update = `${decayed} - (M1[index] / (sqrt(V1[index]) / uniforms.sc2 + uniforms.eps)) * uniforms.stepSize`;
  const p1 = run(`p${decays ? 'd' : ''}`, ['P', 'M1', 'V1'], [p!, m1, v1], masked ? `result[index] = select(P[index], ${update}, ${keepExpr});` : `result[index] = ${update};`);
  return [p1, m1, v1];
}

const register = webgpuKernelRegistration({ [KERNEL]: (backend, inputs, attrs: Attrs) => adamwWebgpu(backend, inputs, attrs) });

/**
 * [p, m, v] after one AdamW step (new tensors; the webgpu backend only). `mask` as in
 * OptimizedParameter, read per `layout`; `gradScale` (scalar) multiplies the gradient first.
 */
export function adamwWebgpuStep(
  p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, mask: tf.Tensor | undefined, gradScale: tf.Scalar | undefined,
  scalars: AdamWStepScalars, layout: AdamWWebgpuLayout,
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  register();
  const inputs: tf.NamedTensorMap = { p, g, m, v, ...(layout.mode !== 0 && mask ? { keep: mask } : {}), ...(gradScale ? { scale: gradScale } : {}) };
  return tf.engine().runKernel(KERNEL, inputs, { ...scalars, ...layout } as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}
