/**
 * The operator-augmented forward (APEX-METHOD §3) as LayerHooks: operator parameters held as
 * tf variables, applied on the fly while training.
 *
 *   output side, rows of the weight (and bias):  W[N] ← diag(a)·W[N] + M·W[P],  W[P] ← diag(b)·W[P]   (v; gate and up)
 *   input side, columns of the weight:           W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ            (o_proj per GQA slot; down_proj)
 *
 * §3 states the output side on activations (y_N ← a ⊙ y_N + M·y_P); by linearity it is the
 * same function as the row transform of the weight the activation comes from, and the weight
 * form costs the same whatever the number of tokens in a micro-batch (test/ops/operator-hooks
 * checks both forms against each other and against fusion). Each site is one differentiable
 * op with a written-out gradient (site-mixing.ts) and M is built densely from its factors
 * (monarch-dense-tf.ts), so gradients reach B1, B2, a, b and the weights. This module deliberately does not use
 * fusion.ts: the exactness test compares a fused checkpoint against this forward.
 */
import * as tf from '@tensorflow/tfjs';
import type { LayerHooks, ProjectionKey } from '../model/layer-hooks.js';
import type { ModelSpec } from '../model/model-spec.js';
import { readFloat32 } from '../model/tensor-read.js';
import { concatArrays } from '../util/typed-arrays.js';
import { lineSet, type LineAxis } from './line-moves.js';
import { monarchDenseTf } from './monarch-dense-tf.js';
import { monarchApplyTf } from './monarch-tf.js';
import type { ChannelOperator, HeadOperator, LayerOperators, OperatorUnits } from './operator-init.js';
import { mixColumns, mixColumnsFactorised, mixColumnsWithM, mixRows, mixRowsFactorised, type SiteLines } from './site-mixing.js';
import { onWebgpu } from './webgpu-programs.js';
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

/** Units and trainable Monarch core (B1, B2, a) of either kind of operator. */
function trainableCore(op: HeadOperator | ChannelOperator) {
  return {
    P: op.P,
    N: op.N,
    ...(op.E ? { E: op.E } : {}),
    B1: factor(op.B1, op.nb, op.bs),
    B2: factor(op.B2, op.nb, op.bs),
    a: vector(op.a),
  };
}

/** Trainable tf variables (fresh copies) for one layer's operators. Dispose with disposeOperatorVariables. */
export function operatorVariables(ops: LayerOperators): TrainableLayerOperators {
  const attn: TrainableHeadOperator | undefined = ops.attn && { ...trainableCore(ops.attn), bV: vector(ops.attn.bV) };
  const mlp: TrainableChannelOperator | undefined = ops.mlp && {
    ...trainableCore(ops.mlp),
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
export async function readOperatorVariables(t: TrainableLayerOperators): Promise<LayerOperators> {
  const values = new Map<tf.Tensor, Float32Array>();
  for (const v of operatorVariableList(t)) values.set(v, await readFloat32(v));
  const f32 = (v: tf.Tensor) => values.get(v)!;
  const core = (op: TrainableHeadOperator | TrainableChannelOperator) => ({
    P: op.P,
    N: op.N,
    ...(op.E ? { E: op.E } : {}),
    B1: f32(op.B1),
    B2: f32(op.B2),
    nb: op.B1.shape[0],
    bs: op.B1.shape[1],
    a: f32(op.a),
  });
  const attn: HeadOperator | undefined = t.attn && { ...core(t.attn), bV: f32(t.attn.bV) };
  const mlp: ChannelOperator | undefined = t.mlp && { ...core(t.mlp), bGate: f32(t.mlp.bGate), bUp: f32(t.mlp.bUp) };
  return { layer: t.layer, ...(attn ? { attn } : {}), ...(mlp ? { mlp } : {}) };
}

const concatInt32 = (parts: Int32Array[]): Int32Array => concatArrays(parts, (n) => new Int32Array(n));

/** Line sets kept outside any tidy scope, disposed with the operator's variables. */
const siteTensors = new WeakMap<TrainableLayerOperators, { dispose(): void }[]>();

/** A mixing site's lines (P then N) along `axis`, made on first use (when the weight's extent is known) and kept for the stage. */
function mixSite(owner: TrainableLayerOperators, P: Int32Array, N: Int32Array, axis: LineAxis): (extent: number) => SiteLines {
  let site: (SiteLines & { extent: number }) | undefined;
  return (extent) => {
    if (site?.extent === extent) return site;
    const lines = { P: lineSet(P, axis, extent), N: lineSet(N, axis, extent), both: lineSet(concatInt32([P, N]), axis, extent) };
    const list = siteTensors.get(owner) ?? [];
    list.push(lines.P, lines.N, lines.both);
    siteTensors.set(owner, list);
    site = { ...lines, extent };
    return site;
  };
}

/**
 * Operator sizes up to this build M densely (once per layer evaluation) and run each site as
 * one op with a written-out gradient; above it a dense M would cost n² per weight line against
 * the factorised product's 2·n·bs, and the sites use the factorised product instead.
 */
const DENSE_MONARCH_MAX_N = 1024;

/** M and Mᵀ of one operator, for the current layer evaluation. */
interface MonarchMatrices {
  readonly M: () => tf.Tensor2D;
  readonly Mt: () => tf.Tensor2D;
}

type MonarchOp = { B1: tf.Tensor3D; B2: tf.Tensor3D; a: tf.Tensor1D };
const isDense = (op: MonarchOp) => op.B1.shape[0] * op.B1.shape[1] <= DENSE_MONARCH_MAX_N;

/**
 * The operator's M for the current layer evaluation. `fresh` rebuilds it from the factors (the
 * operator's first site in a layer: v_proj, gate_proj); its later sites (o_proj; up_proj,
 * down_proj) reuse it while it is alive, so M is built once per layer and forward, inside the
 * caller's tidy scope and gradient tape.
 */
function monarchCache(op: { B1: tf.Tensor3D; B2: tf.Tensor3D }): (fresh: boolean) => MonarchMatrices {
  let M: tf.Tensor2D | undefined;
  let Mt: tf.Tensor2D | undefined;
  const matrices: MonarchMatrices = {
    M: () => (M ??= monarchDenseTf(op.B1, op.B2)),
    Mt: () => (Mt && !Mt.isDisposed ? Mt : (Mt = tf.transpose(matrices.M()))),
  };
  return (fresh) => {
    if (fresh || !M || M.isDisposed) {
      M = undefined;
      Mt = undefined;
    }
    return matrices;
  };
}

/**
 * LayerHooks for one decoder layer: the operator-augmented forward of §3 as weight (and bias)
 * transforms of v, o, gate, up and down (site-mixing.ts). Line sets are made at the first call
 * of each site (kept until disposeOperatorVariables); M is built from its factors once per
 * layer evaluation, inside the caller's tidy scope and gradient tape.
 */
export function operatorHooks(t: TrainableLayerOperators, spec: HeadSpec): LayerHooks {
  const { attn, mlp } = t;
  if (!attn && !mlp) return {};
  const slots = spec.numHeads / spec.numKvHeads;
  const value = attn && mixSite(t, headRows(attn.P, spec.headDim), headRows(attn.N, spec.headDim), 0);
  const out = attn && mixSite(
    t,
    concatInt32(oProjSlotColumns(attn.P, spec.numHeads, spec.numKvHeads, spec.headDim)),
    concatInt32(oProjSlotColumns(attn.N, spec.numHeads, spec.numKvHeads, spec.headDim)),
    1,
  );
  const gateUp = mlp && mixSite(t, mlp.P, mlp.N, 0);
  const down = mlp && mixSite(t, mlp.P, mlp.N, 1);
  const attnM = attn && monarchCache(attn);
  const mlpM = mlp && monarchCache(mlp);
  // `fresh`: the first use of an operator in a layer evaluation (the v_proj and gate_proj
  // weights, which the layer reads before the operator's other sites and before its biases).
  const rows = (W: tf.Tensor2D, site: SiteLines, op: MonarchOp, cache: (fresh: boolean) => MonarchMatrices, fresh: boolean, b: tf.Tensor1D) =>
    isDense(op) ? mixRows(W, site, cache(fresh).M(), op.a, b) : mixRowsFactorised(W, site, (x) => monarchApplyTf(op.B1, op.B2, x), op.a, b);
  const columns = (W: tf.Tensor2D, site: SiteLines, n: number, op: MonarchOp, cache: (fresh: boolean) => MonarchMatrices) =>
    !isDense(op)
      ? mixColumnsFactorised(W, site, n, (x) => monarchApplyTf(op.B1, op.B2, x), op.a)
      : onWebgpu()
        ? mixColumnsWithM(W, site, n, cache(false).M(), op.a)
        : mixColumns(W, site, n, cache(false).Mt(), op.a);
  const outputSide = (key: ProjectionKey, W: tf.Tensor2D, fresh: boolean): tf.Tensor2D => {
    if (key === 'v_proj' && attn && value && attnM) return rows(W, value(W.shape[0]), attn, attnM, fresh, attn.bV);
    if (key === 'gate_proj' && mlp && gateUp && mlpM) return rows(W, gateUp(W.shape[0]), mlp, mlpM, fresh, mlp.bGate);
    if (key === 'up_proj' && mlp && gateUp && mlpM) return rows(W, gateUp(W.shape[0]), mlp, mlpM, false, mlp.bUp);
    return W;
  };
  return {
    transformWeight: (key, W) => {
      if (key === 'o_proj' && attn && out && attnM) return columns(W, out(W.shape[1]), slots, attn, attnM);
      if (key === 'down_proj' && mlp && down && mlpM) return columns(W, down(W.shape[1]), 1, mlp, mlpM);
      return outputSide(key, W, true);
    },
    // Biases follow their rows' rule on the output side (§3); o_proj/down_proj biases are untouched.
    transformBias: (key, bias) => {
      if (key !== 'v_proj' && key !== 'gate_proj' && key !== 'up_proj') return bias;
      return tf.reshape(outputSide(key, tf.reshape(bias, [bias.shape[0], 1]) as tf.Tensor2D, false), [bias.shape[0]]) as tf.Tensor1D;
    },
  };
}
