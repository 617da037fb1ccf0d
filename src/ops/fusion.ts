/**
 * Fusing APEX operators back into plain weights (APEX-METHOD §3), on float32 row-major
 * matrices [out, in], in place.
 *
 *   output side (rows: v_proj, gate_proj, up_proj and their biases):
 *     W[N] ← diag(a)·W[N] + M·W[P]   (from the unscaled W[P]);   W[P] ← diag(b)·W[P]
 *   input side (columns: o_proj, down_proj):
 *     W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ
 *   GQA: o_proj is mixed once per slot j of a KV group (query head g·(H/nKv) + j), same M, a.
 *
 * Arithmetic is float64 per element with one rounding to float32; the Monarch products run in
 * the WebAssembly SIMD kernel of block-matmul.ts (M loaded once per tensor, applied to blocks
 * of columns or rows). An element whose update is exactly the identity (a = 1 and a zero mix
 * contribution, or b = 1) is not written at all, so identity operators leave every bit in
 * place (signed zeros, NaN payloads).
 * Which tensor gets which rule comes from the architecture table (src/model/architecture.ts);
 * q_proj, k_proj and the o_proj / down_proj biases are never touched.
 */
import { layerTensors, type LayerTensor, type LayerTensorDescriptor } from '../model/architecture.js';
import type { ModelSpec } from '../model/model-spec.js';
import { MonarchProduct, monarchIsZero } from './monarch.js';
import type { ChannelOperator, HeadOperator, LayerOperators } from './operator-init.js';
import { headRows, oProjSlotColumns } from './unit-rows.js';

/** The mixing part of an operator: M as Monarch factors, and a. */
export interface Mixer {
  readonly B1: Float32Array;
  readonly B2: Float32Array;
  readonly a: Float32Array;
}

/** Rows of a [rows, cols] matrix processed per block on the input side (bounds scratch memory). */
const INPUT_SIDE_ROW_BLOCK = 256;
/** Rows gathered and scattered together on the input side: one cache line of float64 scratch. */
const INPUT_SIDE_ROW_TILE = 8;
/** Columns processed per block on the output side. */
const OUTPUT_SIDE_COL_BLOCK = 512;

function isAllOnes(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (v[i] !== 1) return false;
  return true;
}

/**
 * Output side on rows: W[N] ← diag(a)·W[N] + M·W[P], then W[P] ← diag(b)·W[P]. M acts along
 * the rows, so the columns are processed in blocks (bounded scratch memory); N is finished
 * from the unscaled W[P] before any P row is scaled.
 */
export function fuseOutputRows(W: Float32Array, cols: number, pRows: Int32Array, nRows: Int32Array, mixer: Mixer, b: Float32Array): void {
  const n = pRows.length;
  checkOperands(n, nRows.length, mixer, b.length);
  checkIndices(pRows, nRows, W.length / cols, 'row');
  const { a } = mixer;
  const product = cols > 0 && !monarchIsZero(mixer.B1, mixer.B2) ? new MonarchProduct(mixer.B1, mixer.B2, n, Math.min(OUTPUT_SIDE_COL_BLOCK, cols)) : undefined;
  const stride = product?.stride ?? 0;
  for (let c0 = 0; c0 < cols; c0 += OUTPUT_SIDE_COL_BLOCK) {
    const C = Math.min(OUTPUT_SIDE_COL_BLOCK, cols - c0);
    let mix: Float64Array | undefined;
    if (product) {
      const WP = product.input();
      for (let i = 0; i < n; i++) WP.set(W.subarray(pRows[i]! * cols + c0, pRows[i]! * cols + c0 + C), i * stride);
      mix = product.multiply(C);
    }
    for (let i = 0; i < n; i++) {
      const ai = a[i]!;
      const row = nRows[i]! * cols + c0;
      const at = i * stride;
      for (let t = 0; t < C; t++) {
        const m = mix ? mix[at + t]! : 0;
        if (ai === 1 && m === 0) continue;
        W[row + t] = ai * W[row + t]! + m;
      }
    }
  }
  for (let i = 0; i < n; i++) {
    const bi = b[i]!;
    if (bi === 1) continue;
    const row = pRows[i]! * cols;
    for (let t = 0; t < cols; t++) W[row + t] = bi * W[row + t]!;
  }
}

/** Input side on columns: W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ, processed in row blocks. */
export function fuseInputColumns(W: Float32Array, cols: number, pCols: Int32Array, nCols: Int32Array, mixer: Mixer): void {
  const n = pCols.length;
  checkOperands(n, nCols.length, mixer, n);
  checkIndices(pCols, nCols, cols, 'column');
  const { a } = mixer;
  const rows = W.length / cols;
  const product = rows > 0 && !monarchIsZero(mixer.B1, mixer.B2) ? new MonarchProduct(mixer.B1, mixer.B2, n, Math.min(INPUT_SIDE_ROW_BLOCK, rows)) : undefined;
  const stride = product?.stride ?? 0;
  // Operator positions visited in ascending column order, so the weight rows are read and
  // written front to back (the selection order is arbitrary; only the memory order changes).
  const byP = ascendingOrder(pCols);
  const byN = ascendingOrder(nCols);
  for (let r0 = 0; r0 < rows; r0 += INPUT_SIDE_ROW_BLOCK) {
    const R = Math.min(INPUT_SIDE_ROW_BLOCK, rows - r0);
    let mix: Float64Array | undefined;
    if (product) {
      // G[i, r] = W[r0 + r, P_i]: each weight row's P-slice is one column vector of G, so
      // M·G gives (W[:, P]·Mᵀ)ᵀ for the block. Gathered a few rows at a time, so that each
      // G line is written whole while those rows of W stay in cache.
      const G = product.input();
      for (let rt = 0; rt < R; rt += INPUT_SIDE_ROW_TILE) {
        const T = Math.min(INPUT_SIDE_ROW_TILE, R - rt);
        const base = (r0 + rt) * cols;
        for (let k = 0; k < n; k++) {
          const i = byP[k]!;
          const g = i * stride + rt;
          const w = base + pCols[i]!;
          for (let r = 0; r < T; r++) G[g + r] = W[w + r * cols]!;
        }
      }
      mix = product.multiply(R);
    }
    for (let rt = 0; rt < R; rt += INPUT_SIDE_ROW_TILE) {
      const T = Math.min(INPUT_SIDE_ROW_TILE, R - rt);
      const base = (r0 + rt) * cols;
      for (let k = 0; k < n; k++) {
        const i = byN[k]!;
        const ai = a[i]!;
        const g = i * stride + rt;
        const w = base + nCols[i]!;
        for (let r = 0; r < T; r++) {
          const m = mix ? mix[g + r]! : 0;
          if (ai === 1 && m === 0) continue;
          const at = w + r * cols;
          W[at] = W[at]! * ai + m;
        }
      }
    }
  }
}

/** Positions of `indices` sorted by their values. */
function ascendingOrder(indices: Int32Array): Int32Array {
  return Int32Array.from(indices.keys()).sort((x, y) => indices[x]! - indices[y]!);
}

function checkIndices(p: Int32Array, nIdx: Int32Array, limit: number, what: string): void {
  for (const i of [...p, ...nIdx]) {
    if (!Number.isInteger(i) || i < 0 || i >= limit) throw new RangeError(`operator ${what} ${i} outside 0..${limit - 1}`);
  }
}

function checkOperands(n: number, nN: number, mixer: Mixer, nb: number): void {
  if (nN !== n || mixer.a.length !== n || nb !== n) {
    throw new RangeError(`operator sizes disagree: |P| rows ${n}, |N| rows ${nN}, a ${mixer.a.length}, b ${nb}`);
  }
}

/** v_proj weight [nKv·d_h, hidden] or bias [nKv·d_h] (cols = 1). */
export function fuseValueProjection(W: Float32Array, cols: number, op: HeadOperator, headDim: number): void {
  fuseOutputRows(W, cols, headRows(op.P, headDim), headRows(op.N, headDim), op, op.bV);
}

/** o_proj weight [hidden, H·d_h], once per GQA slot. */
export function fuseOutputProjection(W: Float32Array, op: HeadOperator, spec: Pick<ModelSpec, 'numHeads' | 'numKvHeads' | 'headDim'>): void {
  const cols = spec.numHeads * spec.headDim;
  const pSlots = oProjSlotColumns(op.P, spec.numHeads, spec.numKvHeads, spec.headDim);
  const nSlots = oProjSlotColumns(op.N, spec.numHeads, spec.numKvHeads, spec.headDim);
  for (let j = 0; j < pSlots.length; j++) fuseInputColumns(W, cols, pSlots[j]!, nSlots[j]!, op);
}

/** gate_proj or up_proj weight [I, hidden] or bias [I] (cols = 1), with that projection's b. */
export function fuseGateOrUp(W: Float32Array, cols: number, op: ChannelOperator, which: 'gate_proj' | 'up_proj'): void {
  fuseOutputRows(W, cols, op.P, op.N, op, which === 'gate_proj' ? op.bGate : op.bUp);
}

/** down_proj weight [hidden, I]. */
export function fuseDownProjection(W: Float32Array, intermediateSize: number, op: ChannelOperator): void {
  fuseInputColumns(W, intermediateSize, op.P, op.N, op);
}

function mixes(op: HeadOperator | ChannelOperator): boolean {
  return !monarchIsZero(op.B1, op.B2) || !isAllOnes(op.a);
}

/** The output-side scale b of a tensor's rows (b_v, b_gate or b_up). */
function outputScale(t: LayerTensorDescriptor, ops: LayerOperators): Float32Array | undefined {
  if (t.units === 'kv-head') return ops.attn?.bV;
  if (t.role === 'gate_proj') return ops.mlp?.bGate;
  if (t.role === 'up_proj') return ops.mlp?.bUp;
  return undefined;
}

/**
 * Whether the layer's operators change a tensor, by the tensor's rule in the architecture
 * table. An identity operator (M = 0 by a zero factor, a = b = 1) changes nothing; q/k
 * (direct-only) and the o_proj / down_proj biases (no rule) never change.
 */
export function tensorChangedBy(t: LayerTensorDescriptor, ops: LayerOperators): boolean {
  const op = t.units === 'channel' ? ops.mlp : t.units === 'head' || t.units === 'kv-head' ? ops.attn : undefined;
  if (!op) return false;
  if (t.rule === 'input-side') return mixes(op);
  if (t.rule === 'output-side') return mixes(op) || !isAllOnes(outputScale(t, ops)!);
  return false;
}

/** The tensors of a layer its operators change (for `expand --dry-run` and for byte-copying the rest). */
export function touchedTensors(ops: LayerOperators, spec: ModelSpec): LayerTensor[] {
  return layerTensors(spec, ops.layer).filter((t) => tensorChangedBy(t, ops));
}

/**
 * Applies the layer's operators to one of its tensors in place (the caller decodes it to
 * float32 and encodes it once afterwards), by the tensor's rule in the architecture table.
 * Returns false, leaving `values` alone, for a tensor no rule applies to.
 */
export function fuseLayerTensor(t: LayerTensor, values: Float32Array, ops: LayerOperators, spec: ModelSpec): boolean {
  if (t.layer !== ops.layer) throw new RangeError(`operators of layer ${ops.layer} applied to ${t.name}`);
  const numel = t.dims.reduce((x, y) => x * y, 1);
  if (values.length !== numel) throw new RangeError(`${t.name}: ${values.length} values, expected [${t.dims}]`);
  const cols = t.dims.length === 2 ? t.dims[1]! : 1;
  if (t.rule === 'output-side') {
    if (t.units === 'kv-head' && ops.attn) {
      fuseValueProjection(values, cols, ops.attn, spec.headDim);
      return true;
    }
    if (t.units === 'channel' && ops.mlp && (t.role === 'gate_proj' || t.role === 'up_proj')) {
      fuseGateOrUp(values, cols, ops.mlp, t.role);
      return true;
    }
  } else if (t.rule === 'input-side') {
    if (t.units === 'head' && ops.attn) {
      fuseOutputProjection(values, ops.attn, spec);
      return true;
    }
    if (t.units === 'channel' && ops.mlp) {
      fuseDownProjection(values, spec.intermediateSize, ops.mlp);
      return true;
    }
  }
  return false;
}
