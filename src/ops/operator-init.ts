/**
 * APEX operators as plain data, and their initialisation from a selection (APEX-METHOD §3):
 * B1 uniform in (−1/bs, 1/bs) from a seeded Rng, B2 = 0 (so M = 0 exactly), a = b = 1, which
 * makes a fresh stage function-identical to its checkpoint. Head operators have size
 * n = k·d_h (rows head-major: the d_h rows of P[0], then P[1], …); channel operators n = k.
 *
 * Rng consumption order (for reproducibility): layers ascending; within a layer the head
 * operator's B1 first, then the channel operator's B1; B1 values in storage order.
 */
import { Rng } from '../util/rng.js';
import { monarchBlocks } from './monarch.js';
import type { Selection } from './selection.js';

/** The units an operator acts on (head units = KV groups under GQA, or FFN channels). */
export interface OperatorUnits {
  /** Units whose rows are the source of the mix. */
  readonly P: Int32Array;
  /** Units that are re-parameterised. */
  readonly N: Int32Array;
  /** Extra directly-tuned units (structured setting). */
  readonly E?: Int32Array;
}

export interface HeadOperator extends OperatorUnits {
  /** Monarch factors, [nb, bs, bs] each, block j = [out, in]. */
  readonly B1: Float32Array;
  readonly B2: Float32Array;
  readonly nb: number;
  readonly bs: number;
  /** [k·d_h], scales N (head-major). */
  readonly a: Float32Array;
  /** [k·d_h], scales the P rows of v_proj. */
  readonly bV: Float32Array;
}

export interface ChannelOperator extends OperatorUnits {
  readonly B1: Float32Array;
  readonly B2: Float32Array;
  readonly nb: number;
  readonly bs: number;
  /** [k], scales N of gate and up. */
  readonly a: Float32Array;
  /** [k], scales the P rows of gate_proj. */
  readonly bGate: Float32Array;
  /** [k], scales the P rows of up_proj. */
  readonly bUp: Float32Array;
}

export interface LayerOperators {
  readonly layer: number;
  readonly attn?: HeadOperator;
  readonly mlp?: ChannelOperator;
}

/** B1 values uniform in the open interval (−1/bs, 1/bs), float32. */
export function initB1(nb: number, bs: number, rng: Rng): Float32Array {
  const out = new Float32Array(nb * bs * bs);
  const limit = 1 / bs;
  for (let i = 0; i < out.length; i++) {
    let v: number;
    // Redraw the (rare) values whose float32 rounding lands on or beyond the open bounds.
    do v = Math.fround((2 * rng.next() - 1) * limit);
    while (Math.abs(v) >= limit);
    out[i] = v;
  }
  return out;
}

function ones(n: number): Float32Array {
  return new Float32Array(n).fill(1);
}

function checkSelection(sel: Selection, what: string): void {
  if (sel.P.length !== sel.N.length) throw new RangeError(`${what}: |P| = ${sel.P.length} but |N| = ${sel.N.length}`);
  if (sel.P.length === 0) throw new RangeError(`${what}: empty selection has no operator`);
}

/** The units of a selection and a fresh Monarch core of size n: M = 0 exactly, a = 1. */
function freshCore(sel: Selection, n: number, rng: Rng) {
  const { nb, bs } = monarchBlocks(n);
  return {
    P: Int32Array.from(sel.P),
    N: Int32Array.from(sel.N),
    ...(sel.E.length > 0 ? { E: Int32Array.from(sel.E) } : {}),
    B1: initB1(nb, bs, rng),
    B2: new Float32Array(nb * bs * bs),
    nb,
    bs,
    a: ones(n),
  };
}

/** Fresh head operator for a selection of head units (KV groups under GQA). */
export function initHeadOperator(sel: Selection, headDim: number, rng: Rng): HeadOperator {
  checkSelection(sel, 'head operator');
  const n = sel.P.length * headDim;
  return { ...freshCore(sel, n, rng), bV: ones(n) };
}

/** Fresh channel operator for a selection of FFN channels. */
export function initChannelOperator(sel: Selection, rng: Rng): ChannelOperator {
  checkSelection(sel, 'channel operator');
  const n = sel.P.length;
  return { ...freshCore(sel, n, rng), bGate: ones(n), bUp: ones(n) };
}

/**
 * Operators of one layer from its head and channel selections; a kind whose selection is
 * empty (k = 0) or not asked for gets no operator.
 */
export function initLayerOperators(layer: number, selections: { heads?: Selection; channels?: Selection }, headDim: number, rng: Rng): LayerOperators {
  const attn = selections.heads && selections.heads.P.length > 0 ? initHeadOperator(selections.heads, headDim, rng) : undefined;
  const mlp = selections.channels && selections.channels.P.length > 0 ? initChannelOperator(selections.channels, rng) : undefined;
  return { layer, ...(attn ? { attn } : {}), ...(mlp ? { mlp } : {}) };
}
