/**
 * The operator-augmented forward (APEX-METHOD §3) as LayerHooks: operator parameters held as
 * tf variables, applied on the fly while training.
 *
 *   output side, on activations:  y_N ← a ⊙ y_N + M·y_P,  y_P ← b ⊙ y_P   (v; gate and up)
 *   input side, on the weight:    W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ  (o_proj per GQA slot; down_proj)
 *
 * Everything is built from differentiable tf ops (transposes, row moves as UnsortedSegmentSum
 * with a custom gradient, concat, the Monarch product), so gradients reach B1, B2, a, b and the
 * weights. This module deliberately does not use
 * fusion.ts: the exactness test compares a fused checkpoint against this forward.
 */
import * as tf from '@tensorflow/tfjs';
import type { LayerHooks, ProjectionKey } from '../model/layer-hooks.js';
import type { ModelSpec } from '../model/model-spec.js';
import { monarchApplyTf } from './monarch-tf.js';
import type { ChannelOperator, HeadOperator, LayerOperators, OperatorUnits } from './operator-init.js';
import { headRows, oProjSlotColumns } from './unit-rows.js';

export interface TrainableHeadOperator extends OperatorUnits {
  /** [nb, bs, bs] */
  readonly B1: tf.Variable<tf.Rank.R3>;
  readonly B2: tf.Variable<tf.Rank.R3>;
  /** [k·d_h] */
  readonly a: tf.Variable<tf.Rank.R1>;
  readonly bV: tf.Variable<tf.Rank.R1>;
}

export interface TrainableChannelOperator extends OperatorUnits {
  readonly B1: tf.Variable<tf.Rank.R3>;
  readonly B2: tf.Variable<tf.Rank.R3>;
  /** [k] */
  readonly a: tf.Variable<tf.Rank.R1>;
  readonly bGate: tf.Variable<tf.Rank.R1>;
  readonly bUp: tf.Variable<tf.Rank.R1>;
}

export interface TrainableLayerOperators {
  readonly layer: number;
  readonly attn?: TrainableHeadOperator;
  readonly mlp?: TrainableChannelOperator;
}

type HeadSpec = Pick<ModelSpec, 'numHeads' | 'numKvHeads' | 'headDim'>;

/** A trainable variable holding a copy of `values` (tf names it; names must be unique per process). */
function variableOf(values: Float32Array, shape: number[]): tf.Variable {
  const initial = tf.tensor(values, shape, 'float32');
  const v = tf.variable(initial, true);
  initial.dispose();
  return v;
}

function factor(values: Float32Array, nb: number, bs: number): tf.Variable<tf.Rank.R3> {
  return variableOf(values, [nb, bs, bs]) as tf.Variable<tf.Rank.R3>;
}

function vector(values: Float32Array): tf.Variable<tf.Rank.R1> {
  return variableOf(values, [values.length]) as tf.Variable<tf.Rank.R1>;
}

/** Trainable tf variables (fresh copies) for one layer's operators. Dispose with disposeOperatorVariables. */
export function operatorVariables(ops: LayerOperators): TrainableLayerOperators {
  const attn: TrainableHeadOperator | undefined = ops.attn && {
    P: ops.attn.P,
    N: ops.attn.N,
    ...(ops.attn.E ? { E: ops.attn.E } : {}),
    B1: factor(ops.attn.B1, ops.attn.nb, ops.attn.bs),
    B2: factor(ops.attn.B2, ops.attn.nb, ops.attn.bs),
    a: vector(ops.attn.a),
    bV: vector(ops.attn.bV),
  };
  const mlp: TrainableChannelOperator | undefined = ops.mlp && {
    P: ops.mlp.P,
    N: ops.mlp.N,
    ...(ops.mlp.E ? { E: ops.mlp.E } : {}),
    B1: factor(ops.mlp.B1, ops.mlp.nb, ops.mlp.bs),
    B2: factor(ops.mlp.B2, ops.mlp.nb, ops.mlp.bs),
    a: vector(ops.mlp.a),
    bGate: vector(ops.mlp.bGate),
    bUp: vector(ops.mlp.bUp),
  };
  return { layer: ops.layer, ...(attn ? { attn } : {}), ...(mlp ? { mlp } : {}) };
}

/** The variables of a layer's operators, e.g. for an optimizer's var list. */
export function operatorVariableList(t: TrainableLayerOperators): tf.Variable[] {
  const out: tf.Variable[] = [];
  if (t.attn) out.push(t.attn.B1, t.attn.B2, t.attn.a, t.attn.bV);
  if (t.mlp) out.push(t.mlp.B1, t.mlp.B2, t.mlp.a, t.mlp.bGate, t.mlp.bUp);
  return out;
}

export function disposeOperatorVariables(t: TrainableLayerOperators): void {
  for (const v of operatorVariableList(t)) v.dispose();
  for (const x of siteTensors.get(t) ?? []) x.dispose();
  siteTensors.delete(t);
}

/** Current values of trained operators as plain data (for operators.safetensors and fusion). */
export function readOperatorVariables(t: TrainableLayerOperators): LayerOperators {
  const f32 = (v: tf.Tensor) => Float32Array.from(v.dataSync() as Float32Array);
  const attn: HeadOperator | undefined = t.attn && {
    P: t.attn.P,
    N: t.attn.N,
    ...(t.attn.E ? { E: t.attn.E } : {}),
    B1: f32(t.attn.B1),
    B2: f32(t.attn.B2),
    nb: t.attn.B1.shape[0],
    bs: t.attn.B1.shape[1],
    a: f32(t.attn.a),
    bV: f32(t.attn.bV),
  };
  const mlp: ChannelOperator | undefined = t.mlp && {
    P: t.mlp.P,
    N: t.mlp.N,
    ...(t.mlp.E ? { E: t.mlp.E } : {}),
    B1: f32(t.mlp.B1),
    B2: f32(t.mlp.B2),
    nb: t.mlp.B1.shape[0],
    bs: t.mlp.B1.shape[1],
    a: f32(t.mlp.a),
    bGate: f32(t.mlp.bGate),
    bUp: f32(t.mlp.bUp),
  };
  return { layer: t.layer, ...(attn ? { attn } : {}), ...(mlp ? { mlp } : {}) };
}

function concatInt32(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A one-to-one move of rows, out[to[i]] = x[i] (to[i] = −1 drops row i), as one
 * UnsortedSegmentSum each way: the gradient is the inverse move. Mixing works on the feature
 * axis moved to the front ([width, rows]) so that selecting and re-assembling features are row
 * moves: tfjs's GatherV2 along the last axis is several times slower on wasm than a transpose
 * plus this move, and its gradient transposes twice more.
 */
interface RowMove {
  readonly apply: (x: tf.Tensor2D) => tf.Tensor2D;
  readonly tensors: tf.Tensor[];
}

function rowMove(to: Int32Array, outRows: number): RowMove {
  const from = new Int32Array(outRows).fill(-1);
  to.forEach((t, i) => {
    if (t >= 0) from[t] = i;
  });
  const toT = tf.keep(tf.tensor1d(to, 'int32'));
  const fromT = tf.keep(tf.tensor1d(from, 'int32'));
  const move = tf.customGrad((...inputs: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.unsortedSegmentSum(inputs[0] as tf.Tensor, toT, outRows),
    gradFunc: (dy: tf.Tensor) => tf.unsortedSegmentSum(dy, fromT, to.length),
  }));
  const apply = (x: tf.Tensor2D) => move(x) as tf.Tensor2D;
  return { apply, tensors: [toT, fromT] };
}

/**
 * One mixing site (a feature axis of `width` with the units P, N): `select` takes rows P then
 * N of [width, rows] into [2n, rows]; `assemble` rebuilds [width, rows] from
 * concat([x, new N, new P]) (output side) or concat([x, new N]) (input side).
 */
interface MixSite {
  readonly n: number;
  readonly select: RowMove;
  readonly assemble: RowMove;
}

/** Index tensors kept outside any tidy scope, disposed with the operator's variables. */
const siteTensors = new WeakMap<TrainableLayerOperators, tf.Tensor[]>();

/** The site's moves are made on first use (when the width is known) and kept for the stage. */
function mixSite(owner: TrainableLayerOperators, P: Int32Array, N: Int32Array, outputSide: boolean): (width: number) => MixSite {
  let site: (MixSite & { width: number }) | undefined;
  return (width) => {
    if (site?.width === width) return site;
    const pn = concatInt32([P, N]);
    const replaced = outputSide ? concatInt32([N, P]) : N;
    const toSelected = new Int32Array(width).fill(-1);
    pn.forEach((c, i) => {
      toSelected[c] = i;
    });
    // Row r of concat([x, replacements]) goes to r if x keeps it, replacement i to replaced[i].
    const toAssembled = new Int32Array(width + replaced.length);
    for (let c = 0; c < width; c++) toAssembled[c] = c;
    replaced.forEach((c, i) => {
      toAssembled[c] = -1;
      toAssembled[width + i] = c;
    });
    const select = rowMove(toSelected, pn.length);
    const assemble = rowMove(toAssembled, width);
    const list = siteTensors.get(owner) ?? [];
    list.push(...select.tensors, ...assemble.tensors);
    siteTensors.set(owner, list);
    site = { n: P.length, select, assemble, width };
    return site;
  };
}

/**
 * Operator sizes up to this use M as one dense [n, n] matrix built from B1, B2 per call: one
 * matMul per site instead of the factorised product's four transposes of every [n, rows]
 * activation block (and their gradients), which dominate at small n. Above it the dense
 * matMul's rows·n² work outgrows the factorised 2·rows·n·bs, and the factorised product is used.
 */
const DENSE_MONARCH_MAX_N = 1024;

/** Xᵀ [n, cols] ↦ M·Xᵀ with M from factors B1, B2 (§3's product). */
function monarchLeft(op: { B1: tf.Tensor3D; B2: tf.Tensor3D }): (xT: tf.Tensor2D) => tf.Tensor2D {
  const [nb, bs] = op.B1.shape;
  const n = nb * bs;
  if (n > DENSE_MONARCH_MAX_N) return (xT) => tf.transpose(monarchApplyTf(op.B1, op.B2, tf.transpose(xT)));
  // Row i of monarchApplyTf(I) is M·e_i = column i of M: the product of the identity is Mᵀ.
  const M = tf.transpose(monarchApplyTf(op.B1, op.B2, tf.eye(n) as tf.Tensor2D));
  return (xT) => tf.matMul(M, xT);
}

/** A per-feature vector as a column [n, 1], to scale rows of a [n, rows] block. */
function column(v: tf.Tensor1D): tf.Tensor2D {
  return tf.reshape(v, [v.shape[0], 1]);
}

/**
 * Output side on the features (last axis) of `x` [rows, width]: the n features at P become
 * b ⊙ x_P, those at N become a ⊙ x_N + M·x_P (per row).
 */
function mixOutputFeatures(x: tf.Tensor2D, site: MixSite, mLeft: (xT: tf.Tensor2D) => tf.Tensor2D, a: tf.Tensor1D, b: tf.Tensor1D): tf.Tensor2D {
  const xT = tf.transpose(x);
  const [xP, xN] = tf.split(site.select.apply(xT as tf.Tensor2D), 2, 0) as [tf.Tensor2D, tf.Tensor2D];
  const newN = tf.add(tf.mul(xN, column(a)), mLeft(xP));
  const newP = tf.mul(xP, column(b));
  return tf.transpose(site.assemble.apply(tf.concat([xT, newN, newP], 0) as tf.Tensor2D));
}

/**
 * Input side on the columns of W [rows, cols], for `slots` groups of columns that share M and
 * a (GQA o_proj; one slot otherwise): the site's P and N hold the slots' columns one slot
 * after another, n per slot.
 */
function mixInputColumns(W: tf.Tensor2D, site: MixSite, slots: number, mLeft: (xT: tf.Tensor2D) => tf.Tensor2D, a: tf.Tensor1D): tf.Tensor2D {
  const rows = W.shape[0];
  const n = site.n / slots;
  const WT = tf.transpose(W);
  const [WP, WN] = tf.split(site.select.apply(WT as tf.Tensor2D), 2, 0) as [tf.Tensor2D, tf.Tensor2D];
  // (W[:, P_s]·Mᵀ)ᵀ = M·W[:, P_s]ᵀ for slot s: [slots·n, rows] as [n, slots·rows] needs the
  // slot axis behind the feature axis.
  const bySlot = slots === 1 ? WP : tf.reshape(tf.transpose(tf.reshape(WP, [slots, n, rows]), [1, 0, 2]), [n, slots * rows]);
  const mixedBySlot = mLeft(bySlot as tf.Tensor2D);
  const mixed = slots === 1 ? mixedBySlot : tf.reshape(tf.transpose(tf.reshape(mixedBySlot, [n, slots, rows]), [1, 0, 2]), [slots * n, rows]);
  const newN = tf.add(tf.mul(WN, column(slots === 1 ? a : tf.tile(a, [slots]) as tf.Tensor1D)), mixed);
  return tf.transpose(site.assemble.apply(tf.concat([WT, newN], 0) as tf.Tensor2D));
}

/**
 * LayerHooks for one decoder layer. Index tensors are made at the first call of each site (kept until
 * disposeOperatorVariables); M is rebuilt from its factors at every call, inside the caller's
 * tidy scope and gradient tape.
 */
export function operatorHooks(t: TrainableLayerOperators, spec: HeadSpec): LayerHooks {
  const hooks: LayerHooks = {};
  const { attn, mlp } = t;
  const slots = spec.numHeads / spec.numKvHeads;
  const value = attn && mixSite(t, headRows(attn.P, spec.headDim), headRows(attn.N, spec.headDim), true);
  const out = attn && mixSite(
    t,
    concatInt32(oProjSlotColumns(attn.P, spec.numHeads, spec.numKvHeads, spec.headDim)),
    concatInt32(oProjSlotColumns(attn.N, spec.numHeads, spec.numKvHeads, spec.headDim)),
    false,
  );
  const gateUp = mlp && mixSite(t, mlp.P, mlp.N, true);
  const down = mlp && mixSite(t, mlp.P, mlp.N, false);
  if (attn && value) {
    hooks.mixValue = (v) => {
      const [B, T, C] = v.shape;
      const mixed = mixOutputFeatures(tf.reshape(v, [B * T, C]) as tf.Tensor2D, value(C), monarchLeft(attn), attn.a, attn.bV);
      return tf.reshape(mixed, [B, T, C]) as tf.Tensor3D;
    };
  }
  if (mlp && gateUp) {
    hooks.mixGateUp = (gate, up) => {
      const [B, T, I] = gate.shape;
      const times = monarchLeft(mlp);
      const g = mixOutputFeatures(tf.reshape(gate, [B * T, I]) as tf.Tensor2D, gateUp(I), times, mlp.a, mlp.bGate);
      const u = mixOutputFeatures(tf.reshape(up, [B * T, I]) as tf.Tensor2D, gateUp(I), times, mlp.a, mlp.bUp);
      return [tf.reshape(g, [B, T, I]) as tf.Tensor3D, tf.reshape(u, [B, T, I]) as tf.Tensor3D];
    };
  }
  if (attn || mlp) {
    hooks.transformWeight = (key: ProjectionKey, W: tf.Tensor2D) => {
      if (key === 'o_proj' && attn && out) return mixInputColumns(W, out(W.shape[1]), slots, monarchLeft(attn), attn.a);
      if (key === 'down_proj' && mlp && down) return mixInputColumns(W, down(W.shape[1]), 1, monarchLeft(mlp), mlp.a);
      return W;
    };
  }
  return hooks;
}
