/**
 * Decides, before anything is read, what `apex expand` does to every tensor: copy its bytes
 * unchanged, or compute it (trained update, the operator rules of APEX-METHOD §3 that its role
 * falls under, a dtype cast) and encode it once. Also estimates the memory of the rewrite:
 * tensors are computed one at a time, so the peak is the largest computed tensor's working set
 * (its decoded float32 values, the raw bytes read, the fusion scratch, the encoded bytes) plus
 * fixed I/O buffers, the operators and the runtime. Pure: the dry run prints this plan.
 */
import type { DType } from '../io/dtype.js';
import { DTYPE_BITS, FLOAT_DTYPES } from '../io/dtype.js';
import { layerTensors, type LayerTensor } from '../model/architecture.js';
import type { ModelSpec } from '../model/model-spec.js';
import { tensorChangedBy } from '../ops/fusion.js';
import type { ChannelOperator, HeadOperator, LayerOperators } from '../ops/operator-init.js';

export const OUT_DTYPES = ['F32', 'BF16', 'F16'] as const;
export type OutDtype = (typeof OUT_DTYPES)[number];

/** Why a tensor is computed rather than copied. */
export type ChangeReason = 'update' | 'heads output-side' | 'heads input-side' | 'channels output-side' | 'channels input-side' | 'cast';

export interface PlannedTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly inDtype: DType;
  readonly outDtype: DType;
  /** Empty: copied byte for byte. */
  readonly reasons: readonly ChangeReason[];
  /** The layer tensor (role, rule) when operators change it. */
  readonly fused?: LayerTensor;
}

export interface LayerPlan {
  readonly layer: number;
  readonly heads?: { readonly P: readonly number[]; readonly N: readonly number[]; readonly size: number };
  readonly channels?: { readonly P: readonly number[]; readonly N: readonly number[]; readonly size: number };
  /** Tensors of this layer that change, with why. */
  readonly changed: readonly { readonly name: string; readonly reasons: readonly ChangeReason[] }[];
}

export interface ExpandMemoryEstimate {
  /** Working set of the largest computed tensor (values, raw bytes, fusion scratch, encoded bytes). */
  readonly tensorBytes: number;
  readonly largestTensor: string | null;
  /** Operators held in memory for the whole run. */
  readonly operatorBytes: number;
  /** Copy, write and hashing buffers. */
  readonly ioBytes: number;
  /** Node, the CLI and the libraries loaded. */
  readonly runtimeBytes: number;
  /** What `--max-memory` is compared with. */
  readonly totalBytes: number;
}

export interface ExpandPlan {
  readonly tensors: readonly PlannedTensor[];
  readonly layers: readonly LayerPlan[];
  /** Tensors computed / copied. */
  readonly changed: number;
  readonly copied: number;
  /** Global (non-layer) tensors that change, with why. */
  readonly globals: readonly { readonly name: string; readonly reasons: readonly ChangeReason[] }[];
  readonly memory: ExpandMemoryEstimate;
}

export interface PlanInput {
  readonly tensors: readonly { readonly name: string; readonly dtype: DType; readonly shape: readonly number[] }[];
  readonly spec: ModelSpec;
  readonly operators: readonly LayerOperators[];
  readonly updates: ReadonlySet<string>;
  readonly outDtype?: OutDtype;
}

/** Buffers of the copy path (16 MiB read chunks), the writer (8 MiB) and the hashing pass (16 MiB). */
export const EXPAND_IO_BYTES = 40 * 2 ** 20;
/** Resident size of the CLI process before it touches a tensor (Node, oclif, TensorFlow.js loaded): 109 MiB measured (`--dry-run`), see docs/benchmarks.md. */
export const EXPAND_RUNTIME_BYTES = 112 * 2 ** 20;
/** Rows per block in the input-side fusion (fusion.ts). */
const INPUT_SIDE_ROW_BLOCK = 256;

export function planExpansion(input: PlanInput): ExpandPlan {
  const { spec } = input;
  const layerOf = new Map<string, LayerTensor>();
  const tableOrder = new Map<string, number>();
  for (let i = 0; i < spec.numLayers; i++) {
    for (const t of layerTensors(spec, i)) {
      tableOrder.set(t.name, tableOrder.size);
      layerOf.set(t.name, t);
    }
  }
  const opsOf = new Map(input.operators.map((o) => [o.layer, o]));

  const tensors: PlannedTensor[] = input.tensors.map((t) => {
    const outDtype = input.outDtype !== undefined && FLOAT_DTYPES.has(t.dtype) ? input.outDtype : t.dtype;
    const reasons: ChangeReason[] = [];
    if (input.updates.has(t.name)) reasons.push('update');
    const lt = layerOf.get(t.name);
    const ops = lt ? opsOf.get(lt.layer) : undefined;
    const fused = lt && ops && tensorChangedBy(lt, ops) ? lt : undefined;
    if (fused) reasons.push(ruleReason(fused));
    if (outDtype !== t.dtype) reasons.push('cast');
    return { name: t.name, shape: t.shape, inDtype: t.dtype, outDtype, reasons, ...(fused ? { fused } : {}) };
  });

  const byLayer = new Map<number, { name: string; reasons: ChangeReason[] }[]>();
  const globals: { name: string; reasons: ChangeReason[] }[] = [];
  const inTableOrder = [...tensors].sort((a, b) => (tableOrder.get(a.name) ?? -1) - (tableOrder.get(b.name) ?? -1));
  for (const t of inTableOrder) {
    if (t.reasons.length === 0) continue;
    const lt = layerOf.get(t.name);
    if (!lt) {
      globals.push({ name: t.name, reasons: [...t.reasons] });
      continue;
    }
    const list = byLayer.get(lt.layer) ?? [];
    list.push({ name: t.name, reasons: [...t.reasons] });
    byLayer.set(lt.layer, list);
  }
  const layerNumbers = [...new Set([...byLayer.keys(), ...opsOf.keys()])].sort((a, b) => a - b);
  const layers: LayerPlan[] = layerNumbers.map((layer) => {
    const ops = opsOf.get(layer);
    return {
      layer,
      ...(ops?.attn ? { heads: selectionOf(ops.attn) } : {}),
      ...(ops?.mlp ? { channels: selectionOf(ops.mlp) } : {}),
      changed: byLayer.get(layer) ?? [],
    };
  });
  const changed = tensors.filter((t) => t.reasons.length > 0).length;
  return { tensors, layers, changed, copied: tensors.length - changed, globals, memory: estimateExpandMemory(tensors, input.operators) };
}

function ruleReason(t: LayerTensor): ChangeReason {
  const kind = t.units === 'channel' ? 'channels' : 'heads';
  return t.rule === 'input-side' ? `${kind} input-side` : `${kind} output-side`;
}

function selectionOf(op: HeadOperator | ChannelOperator): { P: number[]; N: number[]; size: number } {
  return { P: Array.from(op.P), N: Array.from(op.N), size: op.a.length };
}

function bytesPer(dtype: DType): number {
  return DTYPE_BITS[dtype] / 8;
}

/**
 * Peak bytes while one tensor is computed: the raw bytes read (a view when they are F32), the
 * float32 values, the Monarch scratch of fusion.ts (P rows copied in float32, two float64
 * intermediates of the same size; input side per block of 256 weight rows), and the encoded
 * output (a view when it is F32).
 */
export function tensorWorkingBytes(t: PlannedTensor, ops: LayerOperators | undefined): number {
  const numel = t.shape.reduce((p, d) => p * d, 1);
  const fromUpdate = t.reasons.includes('update');
  const readBytes = fromUpdate || t.inDtype === 'F32' ? 0 : numel * bytesPer(t.inDtype);
  const values = numel * 4;
  const encoded = t.outDtype === 'F32' ? 0 : numel * bytesPer(t.outDtype);
  let scratch = 0;
  if (t.fused && ops) {
    const op = t.fused.units === 'channel' ? ops.mlp : ops.attn;
    const n = op ? op.a.length : 0;
    const rows = t.fused.dims[0] ?? 1;
    const cols = t.fused.dims.length === 2 ? t.fused.dims[1]! : 1;
    scratch = t.fused.rule === 'input-side' ? 20 * n * Math.min(INPUT_SIDE_ROW_BLOCK, rows) : 20 * n * cols;
  }
  return readBytes + values + scratch + encoded;
}

export function estimateExpandMemory(tensors: readonly PlannedTensor[], operators: readonly LayerOperators[]): ExpandMemoryEstimate {
  const opsOf = new Map(operators.map((o) => [o.layer, o]));
  let tensorBytes = 0;
  let largestTensor: string | null = null;
  for (const t of tensors) {
    if (t.reasons.length === 0) continue;
    const bytes = tensorWorkingBytes(t, t.fused ? opsOf.get(t.fused.layer) : undefined);
    if (bytes > tensorBytes) {
      tensorBytes = bytes;
      largestTensor = t.name;
    }
  }
  let operatorBytes = 0;
  for (const o of operators) {
    for (const op of [o.attn, o.mlp]) {
      if (!op) continue;
      operatorBytes += (op.B1.length + op.B2.length + op.a.length) * 4 + (op.P.length + op.N.length + (op.E?.length ?? 0)) * 4;
      operatorBytes += 'bV' in op ? op.bV.length * 4 : (op.bGate.length + op.bUp.length) * 4;
    }
  }
  const ioBytes = EXPAND_IO_BYTES;
  const runtimeBytes = EXPAND_RUNTIME_BYTES;
  return { tensorBytes, largestTensor, operatorBytes, ioBytes, runtimeBytes, totalBytes: tensorBytes + operatorBytes + ioBytes + runtimeBytes };
}
