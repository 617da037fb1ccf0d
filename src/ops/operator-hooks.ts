/**
 * The operator-augmented forward (APEX-METHOD §3) as LayerHooks: operator parameters held as
 * tf variables, applied on the fly while training.
 *
 *   output side, on activations:  y_N ← a ⊙ y_N + M·y_P,  y_P ← b ⊙ y_P   (v; gate and up)
 *   input side, on the weight:    W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ  (o_proj per GQA slot; down_proj)
 *
 * Everything is built from differentiable tf ops (gather, concat, the batched Monarch product),
 * so gradients reach B1, B2, a, b and the weights. This module deliberately does not use
 * fusion.ts: the exactness test compares a fused checkpoint against this forward.
 */
import * as tf from '@tensorflow/tfjs';
import type { LayerHooks, ProjectionKey } from '../model/layer-hooks.js';
import type { ModelSpec } from '../model/model-spec.js';
import { monarchApplyTf } from './monarch-tf.js';
import type { ChannelOperator, HeadOperator, LayerOperators } from './operator-init.js';
import { headRows, oProjSlotColumns } from './unit-rows.js';

export interface TrainableHeadOperator {
  readonly P: Int32Array;
  readonly N: Int32Array;
  readonly E?: Int32Array;
  /** [nb, bs, bs] */
  readonly B1: tf.Variable<tf.Rank.R3>;
  readonly B2: tf.Variable<tf.Rank.R3>;
  /** [k·d_h] */
  readonly a: tf.Variable<tf.Rank.R1>;
  readonly bV: tf.Variable<tf.Rank.R1>;
}

export interface TrainableChannelOperator {
  readonly P: Int32Array;
  readonly N: Int32Array;
  readonly E?: Int32Array;
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

/**
 * Index map that rebuilds `width` features from concat([original, replacements…]): position
 * `targets[i]` takes column width + i, every other position keeps its own column.
 */
function replacementMap(width: number, targets: Int32Array): Int32Array {
  const map = new Int32Array(width);
  for (let c = 0; c < width; c++) map[c] = c;
  for (let i = 0; i < targets.length; i++) map[targets[i]!] = width + i;
  return map;
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

function idx(values: Int32Array): tf.Tensor1D {
  return tf.tensor1d(values, 'int32');
}

/**
 * Output side on features of the last axis of `x` [rows, width]: the n features at `pIdx`
 * become b ⊙ x_P, those at `nIdx` become a ⊙ x_N + M·x_P (per row).
 */
function mixOutputFeatures(x: tf.Tensor2D, pIdx: Int32Array, nIdx: Int32Array, op: { B1: tf.Tensor3D; B2: tf.Tensor3D; a: tf.Tensor1D }, b: tf.Tensor1D): tf.Tensor2D {
  const width = x.shape[1];
  const xP = tf.gather(x, idx(pIdx), 1) as tf.Tensor2D;
  const xN = tf.gather(x, idx(nIdx), 1) as tf.Tensor2D;
  const newN = tf.add(tf.mul(xN, op.a), monarchApplyTf(op.B1, op.B2, xP));
  const newP = tf.mul(xP, b);
  const all = tf.concat([x, newN, newP], 1);
  return tf.gather(all, idx(replacementMap(width, concatInt32([nIdx, pIdx]))), 1) as tf.Tensor2D;
}

/**
 * Input side on the columns of W [rows, cols], for `slots` groups of columns that share M and
 * a (GQA o_proj; one slot otherwise): pCols / nCols hold the slots' columns one slot after
 * another, n per slot.
 */
function mixInputColumns(W: tf.Tensor2D, pCols: Int32Array, nCols: Int32Array, slots: number, op: { B1: tf.Tensor3D; B2: tf.Tensor3D; a: tf.Tensor1D }): tf.Tensor2D {
  const [rows, cols] = W.shape;
  const n = pCols.length / slots;
  // [rows, slots·n] → [rows·slots, n]: each row of the view is one weight row's P-slice of one
  // slot, and monarchApplyTf maps each view row x to M·x, which is W[:, P]·Mᵀ.
  const WP = tf.reshape(tf.gather(W, idx(pCols), 1), [rows * slots, n]) as tf.Tensor2D;
  const mixed = tf.reshape(monarchApplyTf(op.B1, op.B2, WP), [rows, slots * n]);
  const WN = tf.gather(W, idx(nCols), 1);
  const newN = tf.add(tf.mul(WN, slots === 1 ? op.a : tf.tile(op.a, [slots])), mixed);
  const all = tf.concat([W, newN], 1);
  return tf.gather(all, idx(replacementMap(cols, nCols)), 1) as tf.Tensor2D;
}

/**
 * LayerHooks for one decoder layer. Index lists are computed once here; the tf index tensors
 * are made per call inside the caller's tidy scope.
 */
export function operatorHooks(t: TrainableLayerOperators, spec: HeadSpec): LayerHooks {
  const hooks: LayerHooks = {};
  const { attn, mlp } = t;
  const oProj = attn && {
    slots: spec.numHeads / spec.numKvHeads,
    P: concatInt32(oProjSlotColumns(attn.P, spec.numHeads, spec.numKvHeads, spec.headDim)),
    N: concatInt32(oProjSlotColumns(attn.N, spec.numHeads, spec.numKvHeads, spec.headDim)),
  };
  if (attn) {
    const vP = headRows(attn.P, spec.headDim);
    const vN = headRows(attn.N, spec.headDim);
    hooks.mixValue = (v) => {
      const [B, T, C] = v.shape;
      const mixed = mixOutputFeatures(tf.reshape(v, [B * T, C]) as tf.Tensor2D, vP, vN, attn, attn.bV);
      return tf.reshape(mixed, [B, T, C]) as tf.Tensor3D;
    };
  }
  if (mlp) {
    hooks.mixGateUp = (gate, up) => {
      const [B, T, I] = gate.shape;
      const g = mixOutputFeatures(tf.reshape(gate, [B * T, I]) as tf.Tensor2D, mlp.P, mlp.N, mlp, mlp.bGate);
      const u = mixOutputFeatures(tf.reshape(up, [B * T, I]) as tf.Tensor2D, mlp.P, mlp.N, mlp, mlp.bUp);
      return [tf.reshape(g, [B, T, I]) as tf.Tensor3D, tf.reshape(u, [B, T, I]) as tf.Tensor3D];
    };
  }
  if (attn || mlp) {
    hooks.transformWeight = (key: ProjectionKey, W: tf.Tensor2D) => {
      if (key === 'o_proj' && attn && oProj) return mixInputColumns(W, oProj.P, oProj.N, oProj.slots, attn);
      if (key === 'down_proj' && mlp) return mixInputColumns(W, mlp.P, mlp.N, 1, mlp);
      return W;
    };
  }
  return hooks;
}
