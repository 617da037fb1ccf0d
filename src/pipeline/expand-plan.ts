/**
 * Decides, before anything is read, what `apex expand` does to every tensor: copy its bytes
 * unchanged, or compute it (trained update, the operator rules of APEX-METHOD §3 that its role
 * falls under, a dtype cast) and encode it once. Also estimates the memory of the rewrite:
 * tensors are computed one at a time, so the peak is the largest computed tensor's working set
 * (its decoded float32 values, the raw bytes read, the fusion scratch, the encoded bytes) plus
 * the I/O buffers as far as tensors fill them, the operators, and what the command holds beyond
 * the process baseline. Pure: the dry run prints this plan.
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
  /** The trained tensor its update is read from, when not its own name (a tied lm_head.weight: the embedding). */
  readonly updateFrom?: string;
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
  /** The buffer every computed tensor's stored bytes are read into (expand-tensor.ts): the largest one's. */
  readonly scratchBytes: number;
  readonly largestTensor: string | null;
  /** Operators held in memory for the whole run. */
  readonly operatorBytes: number;
  /** Copy, read-back and hashing buffers, as far as the tensors fill them. */
  readonly ioBytes: number;
  /** What the command holds beyond the process baseline whatever the model (hashing worker, index, lock). */
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

/** Copy-path read buffers: two of 16 MiB, used in turn (checkpoint-writer.ts). */
const COPY_CHUNK_BYTES = 16 * 2 ** 20;
/** The safetensors writer's two 8 MiB buffers, which computed tensors are copied into (safetensors-writer.ts). */
const WRITE_BUFFERS_BYTES = 2 * 8 * 2 ** 20;
/** Hashing passes: four 4 MiB read buffers shared by every pass (expand-verify.ts). */
const HASH_BUFFERS_BYTES = 4 * 4 * 2 ** 20;
/**
 * What `apex expand` holds beyond its own start-up (measured as the peak RSS of the same
 * command with --dry-run) whatever the model: mainly the sha256 worker thread (its own V8
 * isolate, about 10 MB while it runs), then the checkpoint index and the output lock, less the
 * start-up garbage that expand's work reuses. 8 MiB: peak RSS − dry-run peak RSS minus the
 * other terms, medians of 9 runs on stories260K (8.3 MB), llama-mha-f32 (13.0 MB) and the 10M
 * f32 model (16.9 MB), 2-core VM (docs/reliability.md); the residual grows with the checkpoint
 * (lazily freed copy buffers), which the constant leaves as the estimate's error.
 */
export const EXPAND_RUNTIME_BYTES = 8 * 2 ** 20;
/** Rows per block in the input-side fusion, columns per block on the output side (fusion.ts). */
const INPUT_SIDE_ROW_BLOCK = 256;
const OUTPUT_SIDE_COL_BLOCK = 512;

const EMBEDDING = 'model.embed_tokens.weight';

/**
 * A tied model's stored `lm_head.weight` (some checkpoints keep one; transformers ignores it and
 * uses the embedding, and so does apex): when the embedding was trained, the copy gets the
 * trained embedding too, so that no loader that reads it finds the untrained head.
 */
function tiedHeadCopy(name: string, input: PlanInput): boolean {
  return name === 'lm_head.weight' && input.spec.tieWordEmbeddings && input.updates.has(EMBEDDING) && !input.updates.has(name);
}

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
    const updateFrom = tiedHeadCopy(t.name, input) ? EMBEDDING : undefined;
    if (input.updates.has(t.name) || updateFrom !== undefined) reasons.push('update');
    const lt = layerOf.get(t.name);
    const ops = lt ? opsOf.get(lt.layer) : undefined;
    const fused = lt && ops && tensorChangedBy(lt, ops) ? lt : undefined;
    if (fused) reasons.push(ruleReason(fused));
    if (outDtype !== t.dtype) reasons.push('cast');
    return { name: t.name, shape: t.shape, inDtype: t.dtype, outDtype, reasons, ...(fused ? { fused } : {}), ...(updateFrom !== undefined ? { updateFrom } : {}) };
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

function numelOf(t: PlannedTensor): number {
  return t.shape.reduce((p, d) => p * d, 1);
}

/** Stored bytes of a computed tensor, read into the shared scratch buffer (F32 for a trained copy). */
function storedBytes(t: PlannedTensor): number {
  return numelOf(t) * (t.reasons.includes('update') ? 4 : bytesPer(t.inDtype));
}

/**
 * Bytes one computed tensor needs besides the shared scratch buffer: its float32 values when
 * they are decoded from another dtype (F32 values are a view of the scratch), its encoded
 * bytes when the output dtype is not F32, and the Monarch product's float64 memory of
 * fusion.ts (both factors, and input/output rows of n × block, the block being 256 weight rows
 * on the input side and 512 columns on the output side, rounded up to the kernel's strip).
 */
export function tensorWorkingBytes(t: PlannedTensor, ops: LayerOperators | undefined): number {
  const numel = numelOf(t);
  const decoded = t.reasons.includes('update') || t.inDtype === 'F32' ? 0 : numel * 4;
  const encoded = t.outDtype === 'F32' ? 0 : numel * bytesPer(t.outDtype);
  let monarch = 0;
  if (t.fused && ops) {
    const op = t.fused.units === 'channel' ? ops.mlp : ops.attn;
    if (op) {
      const n = op.a.length;
      const rows = t.fused.dims[0] ?? 1;
      const cols = t.fused.dims.length === 2 ? t.fused.dims[1]! : 1;
      const block = t.fused.rule === 'input-side' ? Math.min(INPUT_SIDE_ROW_BLOCK, rows) : Math.min(OUTPUT_SIDE_COL_BLOCK, cols);
      monarch = 8 * (op.B1.length + op.B2.length + 2 * n * Math.ceil(block / 8) * 8);
    }
  }
  return decoded + encoded + monarch;
}

/**
 * The peak of the rewrite above the process baseline. Tensors are computed one at a time into
 * one reused buffer and every I/O buffer is allocated once and reused, so the peak is the sum
 * of what is ever touched: the scratch buffer (largest computed tensor's stored bytes), the
 * largest per-tensor extra (tensorWorkingBytes), the operators, the copy buffers up to the
 * largest copied tensor, the writer's buffers up to the largest output file, the hashing
 * buffers up to the largest file hashed, and the runtime constant.
 */
export function estimateExpandMemory(tensors: readonly PlannedTensor[], operators: readonly LayerOperators[]): ExpandMemoryEstimate {
  const opsOf = new Map(operators.map((o) => [o.layer, o]));
  let workingBytes = 0;
  let scratchBytes = 0;
  let largestTensor: string | null = null;
  for (const t of tensors) {
    if (t.reasons.length === 0) continue;
    workingBytes = Math.max(workingBytes, tensorWorkingBytes(t, t.fused ? opsOf.get(t.fused.layer) : undefined));
    if (storedBytes(t) > scratchBytes) {
      scratchBytes = storedBytes(t);
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
  // Buffers are allocated at full size, but only the bytes written into them become resident.
  let largestCopied = 0;
  let inBytes = 0;
  let outBytes = 0;
  for (const t of tensors) {
    const numel = numelOf(t);
    if (t.reasons.length === 0) largestCopied = Math.max(largestCopied, numel * bytesPer(t.inDtype));
    inBytes += numel * bytesPer(t.inDtype);
    outBytes += numel * bytesPer(t.outDtype);
  }
  const largestFile = Math.max(inBytes, outBytes);
  const ioBytes = 2 * Math.min(COPY_CHUNK_BYTES, largestCopied) + Math.min(WRITE_BUFFERS_BYTES, outBytes) + Math.min(HASH_BUFFERS_BYTES, largestFile);
  const tensorBytes = scratchBytes + workingBytes;
  const runtimeBytes = EXPAND_RUNTIME_BYTES;
  return { tensorBytes, scratchBytes, largestTensor, operatorBytes, ioBytes, runtimeBytes, totalBytes: tensorBytes + operatorBytes + ioBytes + runtimeBytes };
}
