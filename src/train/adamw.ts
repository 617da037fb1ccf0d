/**
 * AdamW (decoupled weight decay, bias-corrected moments) over named tfjs variables, float32,
 * computed in the order of PyTorch's `torch.optim.AdamW` (single-tensor path) so runs can be
 * compared with it:
 *
 *     p ← p · (1 − lr·λ)                       (decoupled decay, when the parameter decays)
 *     m ← β1·m + (1 − β1)·g
 *     v ← β2·v + (1 − β2)·g²
 *     p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 *
 * A parameter may carry a mask (0/1, the variable's shape or broadcastable to it, e.g. [rows, 1]
 * to train selected rows): where it is 0 the gradient is treated as 0,
 * and both the decay and the update are skipped, so masked entries keep their exact bits
 * (APEX `structured` trains only selected rows/columns, §4). Moments can be reset (fresh
 * optimizer state at a stage boundary, §5) and exported/imported for checkpoints.
 *
 * A parameter that trains whole rows or columns can name them (`lines`): its moments then hold
 * only those lines ([k, C] or [R, k]), and each step takes the lines of the parameter and of its
 * gradient, updates them unmasked and puts them back, so the other entries keep their bits as
 * with a mask. The reference recipe's `structured` setting trains about half of each projection's
 * lines and the LoRA-sized one a few percent, so whole-tensor moments were most of its optimizer
 * memory. Checkpoints still see whole-tensor moments (zeros outside the lines, as a masked step
 * leaves them), so their format and older checkpoints are unchanged.
 *
 * How a step runs (the cpu/wasm routes give the same bits, test/train/train-kernels.test.ts): on wasm,
 * one WebAssembly SIMD pass per parameter (adamw-simd.ts; unmasked, or masked by rows [R, 1] or
 * columns [1, C], rows a multiple of 4 long); on cpu/wasm otherwise a small unmasked tensor takes
 * one JavaScript kernel; on webgpu two launches of apex's programs over the moments packed in
 * one tensor (adamw-webgpu.ts; same formula, compared with cpu by the GPU check rather than bit
 * for bit); everything else the tfjs operations below.
 */
import * as tf from '@tensorflow/tfjs';
import { readFloat32 } from '../model/tensor-read.js';
import { onJsBackend, wasmSimdAvailable } from '../ops/js-kernel-io.js';
import { maxStorageBindingBytes, onWebgpu } from '../ops/webgpu-programs.js';
import { copyLines, lineSet, type LineAxis, type LineSet } from '../ops/line-moves.js';
import { adamwSimdSupports } from './adamw-simd.js';
import { adamwWebgpuStep } from './adamw-webgpu.js';
import { adamwSimdStepKernel, adamwStepKernel, FUSED_MAX_ELEMENTS, maskLayout, type AdamWSimdLayout, type AdamWStepScalars, type MaskLayout } from './train-kernels.js';

export interface AdamWOptions {
  readonly beta1?: number;
  readonly beta2?: number;
  readonly epsilon?: number;
  /** Decoupled weight decay λ (default 0, as in the reference recipe). */
  readonly weightDecay?: number;
  /** false: always the tfjs operations, never apex's kernels (tests compare the routes). Default true. */
  readonly kernels?: boolean;
}

export interface OptimizedParameter {
  /** Unique name (the checkpoint tensor name, or an operator/adapter name). */
  readonly name: string;
  readonly variable: tf.Variable;
  /**
   * 0/1 float tensor of the variable's shape, or of the same rank with 1s where it broadcasts
   * ([rows, 1] selects rows, [1, cols] columns); entries at 0 never change. Not owned.
   */
  readonly mask?: tf.Tensor;
  /** Whether weight decay applies to this parameter (default true). */
  readonly decay?: boolean;
  /**
   * The rows (axis 0) or columns (axis 1) that train, of a 2-D parameter: the optimizer then keeps
   * moments for these lines only (see above) and needs no mask (a mask given too must have the
   * lines' [R, 1] / [1, C] shape). Every line of the parameter (in any order) is read as the
   * whole tensor.
   */
  readonly lines?: TrainedLines;
}

/** Distinct rows (axis 0) or columns (axis 1) of a 2-D tensor, ascending or not. */
export interface TrainedLines {
  readonly axis: LineAxis;
  readonly indices: Int32Array;
}

/** Optimizer state as plain arrays, keyed by parameter name. */
export interface AdamWState {
  /** Number of updates applied since the last reset (t of the bias correction). */
  readonly step: number;
  readonly firstMoments: ReadonlyMap<string, Float32Array>;
  readonly secondMoments: ReadonlyMap<string, Float32Array>;
}

/** AdamW's moments read on demand, one parameter at a time (AdamW.moments). */
export interface AdamWMoments {
  readonly step: number;
  readonly names: readonly string[];
  first(name: string): Promise<Float32Array>;
  second(name: string): Promise<Float32Array>;
}

interface Slot {
  readonly param: OptimizedParameter;
  /** Shape of the moments and of the update: the variable's, or [k, C] / [R, k] with `lines`. */
  readonly shape: readonly number[];
  /** The trained lines, when the parameter names them: the slot works on them only. */
  readonly lines?: LineSet;
  readonly keep?: tf.Tensor;
  /** The moments, apart (cpu, wasm, tfjs ops) … */
  readonly m?: tf.Variable;
  readonly v?: tf.Variable;
  /** … or packed [2, size], first then second (webgpu's two-launch step, adamw-webgpu.ts). */
  readonly mv?: tf.Variable;
  readonly webgpu?: MaskLayout;
  /** The SIMD pass's view of the parameter (null: it cannot take the pass), made on first use on wasm. */
  simd?: { readonly layout: AdamWSimdLayout; readonly lanes?: tf.Tensor } | null;
}

/** Stores a kernel's new moments in the slot's variables and returns its new parameter values. */
function commit(slot: Slot, [p, m, v]: [tf.Tensor, tf.Tensor, tf.Tensor]): tf.Tensor {
  slot.m!.assign(m);
  slot.v!.assign(v);
  tf.dispose([m, v]);
  return p;
}

/** The mask the update itself applies: none where the slot works on its lines only. */
function updateMask(slot: Slot): tf.Tensor | undefined {
  return slot.lines ? undefined : slot.param.mask;
}

/** How the SIMD pass sees a slot's update, or null where it cannot (mask layout or row length). */
function simdLayout(slot: Slot): { layout: AdamWSimdLayout; lanes?: tf.Tensor } | null {
  const mask = updateMask(slot);
  const at = maskLayout(slot.shape, mask?.shape);
  if (at === null || at.mode === 3 || !adamwSimdSupports(at.cols)) return null;
  const layout: AdamWSimdLayout = { rows: at.rows, cols: at.cols, keepMode: at.mode };
  if (at.mode === 0 || mask === undefined) return { layout };
  // int32 −1 where trained, 0 where frozen: the lanes' bit mask.
  const lanes = tf.keep(tf.tidy(() => tf.neg(tf.cast(tf.greater(tf.reshape(mask, [mask.size]), 0), 'int32'))));
  return { layout, lanes };
}

export const ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0 } as const;

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  private readonly kernels: boolean;
  private readonly slots = new Map<string, Slot>();
  private t = 0;

  constructor(params: readonly OptimizedParameter[], options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? ADAMW_DEFAULTS.beta1;
    this.beta2 = options.beta2 ?? ADAMW_DEFAULTS.beta2;
    this.epsilon = options.epsilon ?? ADAMW_DEFAULTS.epsilon;
    this.weightDecay = options.weightDecay ?? ADAMW_DEFAULTS.weightDecay;
    this.kernels = options.kernels ?? true;
    for (const param of params) {
      if (this.slots.has(param.name)) throw new Error(`AdamW: duplicate parameter '${param.name}'`);
      if (param.mask !== undefined && !broadcastsTo(param.mask.shape, param.variable.shape)) {
        throw new Error(`AdamW: mask of '${param.name}' has shape [${param.mask.shape}], which does not broadcast to [${param.variable.shape}]`);
      }
      const lines = param.lines ? trainedLineSet(param) : undefined;
      const shape = lines ? linesShape(param.variable.shape, lines) : param.variable.shape;
      const size = shape.reduce((a, b) => a * b, 1);
      const mask = lines ? undefined : param.mask;
      // On webgpu (with kernels) the parameter's moments are packed for the two-launch step,
      // where the packed pair fits one storage binding (twice the update's bytes) and the
      // mask, if any, is float32 (the program reads it as f32).
      const packable = this.kernels && onWebgpu() && 8 * size <= maxStorageBindingBytes() && (mask === undefined || mask.dtype === 'float32');
      const webgpu = packable ? (maskLayout(shape, mask?.shape) ?? undefined) : undefined;
      if (webgpu) {
        this.slots.set(param.name, { param, shape, ...(lines ? { lines } : {}), webgpu, mv: zeroMoments([2, size]) });
        continue;
      }
      // The boolean mask only the tfjs-ops route reads.
      const keep = mask === undefined ? undefined : tf.keep(tf.tidy(() => tf.greater(mask, 0)));
      this.slots.set(param.name, { param, shape, ...(lines ? { lines } : {}), keep, m: zeroMoments(shape), v: zeroMoments(shape) });
    }
  }

  /**
   * The gradient as the update reads it, for clipping and the NaN check: `grad` times the mask,
   * or, for a parameter with `lines`, those lines only ([k, C] / [R, k]; never the whole tensor).
   * A new tensor where it differs from `grad`, which stays the caller's.
   */
  trainedGradient(name: string, grad: tf.Tensor): tf.Tensor {
    const slot = this.slots.get(name);
    if (!slot) throw new Error(`AdamW: gradient for unknown parameter '${name}'`);
    if (slot.lines) return slot.lines.take(grad as tf.Tensor2D);
    const mask = slot.param.mask;
    return mask ? tf.tidy(() => tf.mul(grad, mask)) : grad;
  }

  /** Updates applied since construction or the last reset. */
  get step(): number {
    return this.t;
  }

  get parameterNames(): string[] {
    return [...this.slots.keys()];
  }

  /**
   * Applies one update with learning rate `lr`. `grads` must hold a gradient for every
   * parameter (shape of its variable, or for a parameter with `lines` its lines' shape, as
   * trainedGradient gives); the gradients are not disposed. `gradScale` (a scalar
   * tensor, e.g. the clipping coefficient) multiplies every gradient first, as tf.mul would.
   */
  apply(grads: ReadonlyMap<string, tf.Tensor>, lr: number, gradScale?: tf.Scalar): void {
    for (const name of grads.keys()) {
      if (!this.slots.has(name)) throw new Error(`AdamW: gradient for unknown parameter '${name}'`);
    }
    this.t += 1;
    const correction1 = 1 - this.beta1 ** this.t;
    const sqrtCorrection2 = Math.sqrt(1 - this.beta2 ** this.t);
    const stepSize = lr / correction1;
    const fused = this.kernels && onJsBackend();
    const simd = this.kernels && wasmSimdAvailable();
    for (const [name, slot] of this.slots) {
      const passed = grads.get(name);
      if (passed === undefined) throw new Error(`AdamW: missing gradient for '${name}'`);
      // A parameter with lines takes its lines' gradient, or the whole one (read as masked).
      const whole = slot.lines !== undefined && !sameShape(passed.shape, slot.shape) && sameShape(passed.shape, slot.param.variable.shape);
      if (!whole && !sameShape(passed.shape, slot.shape)) {
        const expected = slot.lines ? `[${slot.shape}] (its trained lines) or [${slot.param.variable.shape}]` : `[${slot.shape}]`;
        throw new Error(`AdamW: gradient of '${name}' has shape [${passed.shape}], expected ${expected}`);
      }
      const given = whole ? slot.lines!.take(passed as tf.Tensor2D) : passed;
      try {
        this.applyOne(name, slot, given, lr, gradScale, { stepSize, sqrtCorrection2, fused, simd });
      } finally {
        if (given !== passed) given.dispose();
      }
    }
  }

  /** One parameter's step: its update on the slot's route, then the new values into its variable. */
  private applyOne(
    name: string, slot: Slot, given: tf.Tensor, lr: number, gradScale: tf.Scalar | undefined,
    { stepSize, sqrtCorrection2, fused, simd }: { stepSize: number; sqrtCorrection2: number; fused: boolean; simd: boolean },
  ): void {
    const decays = this.weightDecay !== 0 && slot.param.decay !== false;
    const scalars: AdamWStepScalars = { beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon, decayFactor: decays ? 1 - lr * this.weightDecay : 1, sqrtCorrection2, stepSize };
    // The values the update reads: the parameter's, or a copy of its trained lines.
    const variable = slot.param.variable;
    const current = slot.lines ? slot.lines.take(variable as tf.Tensor as tf.Tensor2D) : variable;
    let updated: tf.Tensor;
    try {
      if (slot.mv) {
        if (!onWebgpu()) throw new Error(`AdamW: the moments of '${name}' were set up for the webgpu backend, which is no longer the active one`);
        // The scale is applied inside the kernel's launches.
        const [p, mv] = adamwWebgpuStep(current, given, slot.mv, updateMask(slot), gradScale, scalars, slot.webgpu!);
        slot.mv.assign(mv);
        mv.dispose();
        updated = p;
      } else {
        const grad = gradScale ? tf.mul(given, gradScale) : given;
        try {
          updated = this.update(slot, current, grad, scalars, { fused, simd });
        } finally {
          if (grad !== given) grad.dispose();
        }
      }
    } finally {
      if (current !== variable) current.dispose();
    }
    // A slot with lines puts them back into a copy of the whole parameter (the rest keeps its bits).
    const next = slot.lines ? slot.lines.put(variable as tf.Tensor as tf.Tensor2D, updated as tf.Tensor2D) : updated;
    variable.assign(next);
    tf.dispose(next === updated ? [updated] : [updated, next]);
  }

  /** One update on the cpu/wasm kernels or the tfjs operations: the new values of `p` (a new tensor). */
  private update(slot: Slot, p: tf.Tensor, grad: tf.Tensor, scalars: AdamWStepScalars, routes: { fused: boolean; simd: boolean }): tf.Tensor {
    if (routes.simd) {
      if (slot.simd === undefined) slot.simd = simdLayout(slot);
      if (slot.simd) return commit(slot, adamwSimdStepKernel(p, grad, slot.m!, slot.v!, slot.simd.lanes, scalars, slot.simd.layout));
    }
    if (slot.keep === undefined && routes.fused && grad.size <= FUSED_MAX_ELEMENTS) {
      // A small tensor: one kernel instead of twelve, the same bits (train-kernels.ts).
      return commit(slot, adamwStepKernel(p, grad, slot.m!, slot.v!, scalars));
    }
    return tf.tidy(() => {
      const g = slot.keep === undefined ? grad : tf.where(slot.keep, grad, tf.zerosLike(grad));
      const m = tf.add(tf.mul(slot.m!, this.beta1), tf.mul(g, 1 - this.beta1));
      const v = tf.add(tf.mul(slot.v!, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
      const decayed = scalars.decayFactor !== 1 ? tf.mul(p, scalars.decayFactor) : p;
      const denom = tf.add(tf.div(tf.sqrt(v), scalars.sqrtCorrection2), this.epsilon);
      const updated = tf.sub(decayed, tf.mul(tf.div(m, denom), scalars.stepSize));
      slot.m!.assign(m);
      slot.v!.assign(v);
      return slot.keep === undefined ? updated : tf.where(slot.keep, updated, p);
    });
  }

  /** Zeroes the moments and the step count (fresh optimizer state). */
  reset(): void {
    this.t = 0;
    for (const slot of this.slots.values()) {
      tf.tidy(() => {
        for (const moment of [slot.m, slot.v, slot.mv]) moment?.assign(tf.zerosLike(moment));
      });
    }
  }

  /**
   * The moments one parameter at a time, for a checkpoint writer that asks for each tensor when
   * it reaches it: only one parameter's moments are downloaded at a time, where exportState holds
   * all of them (twice every trainable tensor). Read it before the next update.
   */
  moments(): AdamWMoments {
    const read = async (name: string, which: 0 | 1): Promise<Float32Array> => {
      const slot = this.slots.get(name);
      if (!slot) throw new Error(`AdamW: no moments of unknown parameter '${name}'`);
      if (!slot.mv) return wholeMoment(slot, await readFloat32(which === 0 ? slot.m! : slot.v!));
      // webgpu keeps a parameter's two moments packed [2, size]: download only the row asked for
      // (the writer asks for them apart: its file is ordered by name, every adam_m.* first).
      const row = tf.slice(slot.mv, [which, 0], [1, slot.mv.shape[1]!]);
      try {
        return wholeMoment(slot, await readFloat32(row));
      } finally {
        row.dispose();
      }
    };
    return {
      step: this.t,
      names: [...this.slots.keys()],
      first: (name) => read(name, 0),
      second: (name) => read(name, 1),
    };
  }

  async exportState(): Promise<AdamWState> {
    const firstMoments = new Map<string, Float32Array>();
    const secondMoments = new Map<string, Float32Array>();
    for (const [name, slot] of this.slots) {
      if (slot.mv) {
        const both = await readFloat32(slot.mv);
        const n = slot.mv.shape[1]!;
        firstMoments.set(name, wholeMoment(slot, both.slice(0, n)));
        secondMoments.set(name, wholeMoment(slot, both.slice(n, 2 * n)));
      } else {
        firstMoments.set(name, wholeMoment(slot, await readFloat32(slot.m!)));
        secondMoments.set(name, wholeMoment(slot, await readFloat32(slot.v!)));
      }
    }
    return { step: this.t, firstMoments, secondMoments };
  }

  /** Restores a state exported from an optimizer over the same parameters. */
  importState(state: AdamWState): void {
    for (const name of state.firstMoments.keys()) {
      if (!this.slots.has(name)) throw new Error(`AdamW state has moments of unknown parameter '${name}'`);
    }
    for (const [name, slot] of this.slots) {
      const m = state.firstMoments.get(name);
      const v = state.secondMoments.get(name);
      if (m === undefined || v === undefined) throw new Error(`AdamW state lacks moments of '${name}'`);
      checkMomentLengths(name, slot, m, v);
    }
    for (const [name, slot] of this.slots) restoreSlot(slot, state.firstMoments.get(name)!, state.secondMoments.get(name)!);
    this.t = state.step;
  }

  /**
   * Restores one parameter's moments (a checkpoint read one tensor at a time); the step count
   * comes apart, through `restoreStep`, once every parameter's moments are in.
   */
  restoreMoments(name: string, first: Float32Array, second: Float32Array): void {
    const slot = this.slots.get(name);
    if (!slot) throw new Error(`AdamW state has moments of unknown parameter '${name}'`);
    checkMomentLengths(name, slot, first, second);
    restoreSlot(slot, first, second);
  }

  /** Sets the number of updates applied so far (t of the bias correction), as restored from a checkpoint. */
  restoreStep(step: number): void {
    if (!Number.isSafeInteger(step) || step < 0) throw new Error(`AdamW: the step count must be an integer >= 0, got ${step}`);
    this.t = step;
  }

  /** Frees the moments and mask copies (the parameters stay with their owner). */
  dispose(): void {
    for (const slot of this.slots.values()) {
      slot.m?.dispose();
      slot.v?.dispose();
      slot.mv?.dispose();
      slot.keep?.dispose();
      slot.simd?.lanes?.dispose();
      slot.lines?.dispose();
    }
    this.slots.clear();
  }
}

/**
 * A non-trainable variable of zeros. tf.variable shares its initial tensor's data, so that tensor
 * must be freed here (the tidy does it): left alive, it kept the moments' memory after dispose(),
 * twice every trainable tensor per optimizer, i.e. per stage of an `apex run` process.
 */
function zeroMoments(shape: readonly number[]): tf.Variable {
  return tf.tidy(() => tf.variable(tf.zeros([...shape]), false));
}

function checkMomentLengths(name: string, slot: Slot, m: Float32Array, v: Float32Array): void {
  const n = slot.param.variable.size;
  if (m.length !== n || v.length !== n) throw new Error(`AdamW state of '${name}' has ${m.length}/${v.length} values, expected ${n}`);
  if (slot.lines) {
    // Outside its trained lines a parameter's moments are zero (its gradient is read as 0 there);
    // anything else was saved by a run that trained other lines of it.
    const at = firstNonzeroOutsideLines(slot, m) ?? firstNonzeroOutsideLines(slot, v);
    if (at !== undefined) {
      const kind = slot.lines.axis === 0 ? 'row' : 'column';
      throw new Error(`AdamW state of '${name}' has a non-zero moment in ${kind} ${at}, which this run does not train: it was saved by a run that trained other ${kind}s`);
    }
  }
}

/** The whole-tensor form of a slot's moment (zeros outside its trained lines), as checkpoints hold it. */
function wholeMoment(slot: Slot, values: Float32Array): Float32Array {
  if (!slot.lines) return values;
  const [R, C] = slot.param.variable.shape as [number, number];
  const whole = new Float32Array(R * C);
  const k = slot.lines.lines.length;
  copyLines(values, slot.shape[1]!, whole, C, R, slot.lines.axis, null, slot.lines.lines, k);
  return whole;
}

/** The slot's part of a whole-tensor moment: its trained lines (the inverse of wholeMoment). */
function slotMoment(slot: Slot, whole: Float32Array): Float32Array {
  if (!slot.lines) return whole;
  const [R, C] = slot.param.variable.shape as [number, number];
  const part = new Float32Array(slot.shape[0]! * slot.shape[1]!);
  copyLines(whole, C, part, slot.shape[1]!, R, slot.lines.axis, slot.lines.lines, null, slot.lines.lines.length);
  return part;
}

/** The first row or column outside the slot's lines where `whole` is not zero, if any. */
function firstNonzeroOutsideLines(slot: Slot, whole: Float32Array): number | undefined {
  const lines = slot.lines!;
  const [R, C] = slot.param.variable.shape as [number, number];
  const trained = new Uint8Array(lines.extent);
  for (const l of lines.lines) trained[l] = 1;
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C; c++) {
      const line = lines.axis === 0 ? r : c;
      if (!trained[line] && whole[r * C + c] !== 0) return line;
    }
  }
  return undefined;
}

/**
 * A parameter's trained lines as the slot's LineSet (checked: a 2-D parameter, distinct lines in
 * range), or undefined where they are every line of it: the slot then works on the whole tensor,
 * whose shape its lines' shape would equal, so that a whole gradient is not read as lines listed
 * in another order.
 */
function trainedLineSet(param: OptimizedParameter): LineSet | undefined {
  const { axis, indices } = param.lines!;
  const shape = param.variable.shape;
  if (shape.length !== 2) throw new Error(`AdamW: '${param.name}' names trained lines but has shape [${shape}], not a matrix`);
  // The trainer masks what it clips and checks with the same lines (trainedGradient), so a mask
  // given too must select exactly them.
  if (param.mask !== undefined && !sameShape(param.mask.shape, shape.map((d, i) => (i === axis ? d : 1)))) {
    throw new Error(`AdamW: '${param.name}' names trained ${axis === 0 ? 'rows' : 'columns'} but its mask has shape [${param.mask.shape}]`);
  }
  const set = lineSet(Int32Array.from(indices), axis, shape[axis]!);
  if (set.lines.length < set.extent) return set;
  set.dispose();
  return undefined;
}

/** The shape of a parameter's trained lines: [k, C] for rows, [R, k] for columns. */
function linesShape(shape: readonly number[], lines: LineSet): number[] {
  return shape.map((d, i) => (i === lines.axis ? lines.lines.length : d));
}

/** Puts a parameter's moments (whole-tensor form) into its slot (packed for webgpu's step, apart otherwise). */
function restoreSlot(slot: Slot, wholeM: Float32Array, wholeV: Float32Array): void {
  const m = slotMoment(slot, wholeM);
  const v = slotMoment(slot, wholeV);
  tf.tidy(() => {
    if (slot.mv) {
      const both = new Float32Array(2 * m.length);
      both.set(m);
      both.set(v, m.length);
      slot.mv.assign(tf.tensor(both, slot.mv.shape, 'float32'));
    } else {
      slot.m!.assign(tf.tensor(m, slot.m!.shape, 'float32'));
      slot.v!.assign(tf.tensor(v, slot.v!.shape, 'float32'));
    }
  });
}

function broadcastsTo(mask: readonly number[], shape: readonly number[]): boolean {
  return mask.length === shape.length && mask.every((d, i) => d === shape[i] || d === 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
