/**
 * Two training kernels for the JavaScript-side backends (cpu, wasm), where every tfjs kernel
 * call costs a fixed 6–10 µs besides its arithmetic and a pass over memory:
 *
 *   ApexAdamW        one AdamW update of one tensor (new p, m, v) in one pass, instead of about
 *                    twelve element-wise kernels and passes (adamw.ts's formula, same order);
 *   ApexSumSquares   Σ g² over any number of tensors in one kernel, accumulated in float64,
 *                    instead of square + sum + add per tensor (the clipping norm).
 *
 * Only for small tensors (FUSED_MAX_ELEMENTS): a JavaScript loop over the elements is slower per
 * element than tfjs-wasm's vectorised kernels (measured on the ~10M benchmark model's tensors:
 * AdamW 160 ms fused against 110 ms as tfjs ops, Σ g² 28 ms against 17 ms), so large tensors
 * keep the tfjs ops and only the per-call costs of the small ones are saved.
 *
 * ApexAdamW rounds every intermediate to float32 (Math.fround), in the order adamw.ts's tfjs
 * ops compute it, so it gives the same bits as those ops on cpu and on wasm (IEEE float32
 * arithmetic and square root are correctly rounded; test/train/train-kernels.test.ts compares
 * the two bit for bit). APEX training has many small parameter tensors (a, b and the two
 * Monarch factors per operator), so per-call costs were a visible part of its overhead.
 */
import * as tf from '@tensorflow/tfjs';
import { jsKernelRegistration, type KernelIo } from '../ops/js-kernel-io.js';
import { adamwSimd } from './adamw-simd.js';

/** Tensors up to this many elements take the fused kernels (break-even measured near 20–25k). */
export const FUSED_MAX_ELEMENTS = 16384;

const ADAMW = 'ApexAdamW';
const ADAMW_SIMD = 'ApexAdamWSimd';
const SUM_SQUARES = 'ApexSumSquares';

export interface AdamWStepScalars {
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  /** 1 − lr·λ, or 1 when the parameter does not decay. */
  readonly decayFactor: number;
  /** √(1 − β2ᵗ) */
  readonly sqrtCorrection2: number;
  /** lr / (1 − β1ᵗ) */
  readonly stepSize: number;
}

const f = Math.fround;

/** The scalars as the tfjs ops see them: float32 tensors made from the same JavaScript numbers. */
function float32Scalars(s: AdamWStepScalars) {
  return {
    b1: f(s.beta1), c1: f(1 - s.beta1), b2: f(s.beta2), c2: f(1 - s.beta2),
    decay: f(s.decayFactor), sc2: f(s.sqrtCorrection2), eps: f(s.epsilon), step: f(s.stepSize),
  };
}

function adamwKernel(io: KernelIo, { p, g, m, v }: Record<string, tf.TensorInfo>, s: AdamWStepScalars): tf.TensorInfo[] {
  const { b1, c1, b2, c2, decay, sc2, eps, step } = float32Scalars(s);
  const decays = s.decayFactor !== 1;
  const shape = p!.shape as number[];
  return io.outputs([shape, shape, shape], [p!, g!, m!, v!], ([P1, M1, V1], [P, G, M, V]) => {
    const n = P1!.length;
    for (let i = 0; i < n; i++) {
      const gi = G![i]!;
      const mi = f(f(M![i]! * b1) + f(gi * c1));
      const vi = f(f(V![i]! * b2) + f(f(gi * gi) * c2));
      const pi = decays ? f(P![i]! * decay) : P![i]!;
      const denom = f(f(f(Math.sqrt(vi)) / sc2) + eps);
      P1![i] = f(pi - f(f(mi / denom) * step));
      M1![i] = mi;
      V1![i] = vi;
    }
  });
}

/**
 * Which entries of a parameter of shape `shape` a mask of shape `mask` selects, as the AdamW
 * kernels read it: mode 0 no mask, 1 one flag per row ([R, 1] of a [R, C] parameter), 2 one per
 * column ([1, C]), 3 one per entry (the parameter's shape); `rows` × `cols` is the parameter
 * viewed as a matrix (1 × size in modes 0 and 3). null: a broadcast the kernels do not read.
 */
export interface MaskLayout {
  readonly mode: 0 | 1 | 2 | 3;
  readonly rows: number;
  readonly cols: number;
}

export function maskLayout(shape: readonly number[], mask: readonly number[] | undefined): MaskLayout | null {
  const size = shape.reduce((a, b) => a * b, 1);
  if (mask === undefined) return { mode: 0, rows: 1, cols: size };
  if (mask.length !== shape.length) return null;
  if (shape.length === 2) {
    const [R, C] = shape as [number, number];
    if (mask[0] === R && mask[1] === 1) return { mode: 1, rows: R, cols: C };
    if (mask[0] === 1 && mask[1] === C) return { mode: 2, rows: R, cols: C };
  }
  return mask.every((d, i) => d === shape[i]) ? { mode: 3, rows: 1, cols: size } : null;
}

/** How adamwSimdStepKernel sees its parameter: [rows, cols], and which lanes it trains. */
export interface AdamWSimdLayout {
  readonly rows: number;
  readonly cols: number;
  /** 0: every entry; 1: `keep` flags rows; 2: `keep` flags columns. */
  readonly keepMode: 0 | 1 | 2;
}

function adamwSimdKernel(io: KernelIo, { p, g, m, v, keep }: Record<string, tf.TensorInfo>, a: AdamWStepScalars & AdamWSimdLayout): tf.TensorInfo[] {
  if (!io.simd) throw new Error(`${ADAMW_SIMD} needs the wasm backend's SIMD passes`);
  const { memory, address } = io.simd;
  const { b1, c1, b2, c2, decay, sc2, eps, step } = float32Scalars(a);
  const shape = p!.shape as number[];
  // Allocated first (an allocation can grow the heap), filled by the pass below.
  const [P1, M1, V1] = io.outputs([shape, shape, shape], [], () => undefined);
  adamwSimd(memory)(
    address(p!), address(g!), address(m!), address(v!), address(P1!), address(M1!), address(V1!),
    a.rows, a.cols, keep ? address(keep) : 0, keep ? a.keepMode : 0,
    b1, c1, b2, c2, decay, sc2, eps, step,
  );
  return [P1!, M1!, V1!];
}

function sumSquaresKernel(io: KernelIo, inputs: tf.TensorInfo[]): tf.TensorInfo {
  return io.outputs([[]], inputs, ([out], values) => {
    let total = 0;
    for (const x of values) for (let i = 0; i < x.length; i++) total += x[i]! * x[i]!;
    out![0] = total;
  })[0]!;
}

const register = jsKernelRegistration({
  [ADAMW]: (io, inputs, attrs: AdamWStepScalars) => adamwKernel(io, inputs, attrs),
  [ADAMW_SIMD]: (io, inputs, attrs: AdamWStepScalars & AdamWSimdLayout) => adamwSimdKernel(io, inputs, attrs),
  // Inputs as a list: any number of tensors.
  [SUM_SQUARES]: (io, inputs) => sumSquaresKernel(io, [...inputs]),
});

/** [p, m, v] after one AdamW step (new tensors; cpu and wasm backends only). */
export function adamwStepKernel(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, scalars: AdamWStepScalars): [tf.Tensor, tf.Tensor, tf.Tensor] {
  register();
  return tf.engine().runKernel(ADAMW, { p, g, m, v }, scalars as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/**
 * [p, m, v] after one AdamW step as one WebAssembly SIMD pass (adamw-simd.ts; the wasm backend
 * only, where `wasmSimdAvailable()`); `keep` (int32 −1/0 per row or column, see `layout`)
 * leaves the other entries of p unchanged and their gradient read as 0.
 */
export function adamwSimdStepKernel(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, keep: tf.Tensor | undefined, scalars: AdamWStepScalars, layout: AdamWSimdLayout): [tf.Tensor, tf.Tensor, tf.Tensor] {
  register();
  const inputs: tf.NamedTensorMap = keep ? { p, g, m, v, keep } : { p, g, m, v };
  return tf.engine().runKernel(ADAMW_SIMD, inputs, { ...scalars, ...layout } as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}

/** Σ x² over all elements of all `tensors`, as a float32 scalar (summed in float64; cpu and wasm only). */
export function sumOfSquares(tensors: readonly tf.Tensor[]): tf.Scalar {
  register();
  return tf.engine().runKernel(SUM_SQUARES, [...tensors] as unknown as tf.NamedTensorMap) as tf.Scalar;
}
