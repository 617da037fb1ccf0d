/**
 * `apex inspect`: what a checkpoint folder holds, read from config.json and the safetensors
 * headers only (no tensor data): architecture and config summary, tensor and parameter counts,
 * dtype histogram, shards, and whether the tensors match what the config implies. Works for
 * architectures apex does not compute with (they are summarised and marked unsupported).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ApexError, UnsupportedModelError } from '../errors.js';
import { checkCheckpointTensors } from '../model/architecture.js';
import { parseModelConfig } from '../model/config.js';
import type { ModelSpec } from '../model/model-spec.js';
import { formatBytes } from './byte-size.js';
import { Checkpoint, INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { numel } from './dtype.js';

export interface RopeSummary {
  /** Which of the config's rope fields are written: `rope_theta`, `rope_scaling`, `rope_parameters`. */
  readonly writtenAs: string[];
  /** Base frequency, or null when the config leaves it to the library default. */
  readonly theta: number | null;
  readonly type: string;
  /** Scaling parameters other than theta and type (factor, low_freq_factor, ...). */
  readonly scaling: Record<string, unknown>;
}

export interface ConfigSummary {
  readonly architecture: string | null;
  readonly modelType: string | null;
  readonly layers: number | null;
  readonly hiddenSize: number | null;
  readonly heads: number | null;
  readonly kvHeads: number | null;
  readonly headDim: number | null;
  readonly intermediateSize: number | null;
  readonly vocabSize: number | null;
  readonly tiedEmbeddings: boolean;
  readonly maxPositionEmbeddings: number | null;
  readonly rope: RopeSummary;
}

export interface DtypeCount {
  readonly dtype: string;
  readonly tensors: number;
  readonly parameters: number;
  readonly bytes: number;
}

export interface ShardSummary {
  readonly file: string;
  readonly tensors: number;
  readonly bytes: number;
}

export interface ValidationCheck {
  readonly check: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface InspectResult {
  readonly dir: string;
  readonly config: ConfigSummary;
  readonly supported: boolean;
  /** Why apex cannot compute with this model, when it cannot. */
  readonly unsupportedReason?: string;
  readonly tensorCount: number;
  readonly parameterCount: number;
  readonly totalBytes: number;
  readonly dtypes: DtypeCount[];
  readonly indexed: boolean;
  readonly shards: ShardSummary[];
  readonly validation: { readonly ok: boolean; readonly checks: ValidationCheck[]; readonly warnings: string[] };
}

/**
 * Opens the checkpoint with the strict reader (a malformed file throws its typed error, exit
 * 3) and summarises it.
 */
export async function inspectCheckpoint(dir: string): Promise<InspectResult> {
  const indexProblems: string[] = [];
  const ck = await Checkpoint.open(dir, { indexProblems });
  try {
    const tensors = ck.tensors();
    const warnings: string[] = [];
    const checks: ValidationCheck[] = [
      { check: 'safetensors headers', ok: true, detail: `${ck.shardFiles.length} file(s) valid (offsets, sizes, dtypes, no trailing bytes)` },
    ];
    if (ck.ignoredIndex) {
      warnings.push(`${SINGLE_FILE} and ${INDEX_FILE} are both in the folder: ${SINGLE_FILE} is the checkpoint, as transformers loads it; the index${ck.unlistedFiles.length > 0 ? ` and ${ck.unlistedFiles.join(', ')}` : ''} are not read`);
    } else if (!ck.index && ck.unlistedFiles.length > 0) {
      warnings.push(`${ck.unlistedFiles.join(', ')} in the folder beside ${SINGLE_FILE}: not part of the checkpoint, not read`);
    }
    if (ck.index) {
      checks.push(
        indexProblems.length === 0
          ? { check: 'shard index', ok: true, detail: 'every mapped tensor is in its shard; no tensor in two shards; no missing shards' }
          : { check: 'shard index', ok: false, detail: indexProblems.join('; ') },
      );
      if (ck.unlistedFiles.length > 0) {
        warnings.push(`${ck.unlistedFiles.join(', ')} in the folder but not in ${INDEX_FILE}: not part of the checkpoint, not read`);
      }
      const declared = ck.index.metadata.total_size;
      const total = ck.totalBytes();
      // Some published indexes carry a slightly wrong total_size; loaders ignore it, so only warn.
      if (typeof declared === 'number' && declared !== total) warnings.push(`index metadata.total_size is ${declared} but the tensors hold ${total} bytes`);
    }
    let spec: ModelSpec | undefined;
    let unsupportedReason: string | undefined;
    try {
      spec = parseModelConfig(ck.config, join(dir, 'config.json'));
    } catch (e) {
      if (!(e instanceof ApexError)) throw e;
      unsupportedReason = e.message;
      // An architecture apex does not compute with is only summarised; a config that
      // contradicts itself (BAD_CONFIG) is a broken checkpoint.
      if (!(e instanceof UnsupportedModelError)) checks.push({ check: 'config.json', ok: false, detail: e.message });
    }
    if (spec) {
      try {
        warnings.push(...checkCheckpointTensors(spec, tensors, dir).warnings);
        checks.push({ check: 'tensors match config', ok: true, detail: `all tensors of ${spec.architecture} present with the shapes config.json implies` });
      } catch (e) {
        if (!(e instanceof ApexError)) throw e;
        checks.push({ check: 'tensors match config', ok: false, detail: e.message });
      }
    }
    const shards: ShardSummary[] = [];
    for (const file of ck.shardFiles) {
      shards.push({ file, tensors: tensors.filter((t) => t.file === file).length, bytes: (await stat(join(dir, file))).size });
    }
    return {
      dir,
      config: summarizeConfig(ck.config),
      supported: spec !== undefined,
      ...(unsupportedReason !== undefined ? { unsupportedReason } : {}),
      tensorCount: tensors.length,
      parameterCount: tensors.reduce((s, t) => s + numel(t.shape), 0),
      totalBytes: ck.totalBytes(),
      dtypes: dtypeHistogram(tensors),
      indexed: ck.index !== undefined,
      shards,
      validation: { ok: checks.every((c) => c.ok), checks, warnings },
    };
  } finally {
    await ck.close();
  }
}

export function dtypeHistogram(tensors: readonly { dtype: string; shape: readonly number[]; begin: number; end: number }[]): DtypeCount[] {
  const by = new Map<string, { tensors: number; parameters: number; bytes: number }>();
  for (const t of tensors) {
    const e = by.get(t.dtype) ?? { tensors: 0, parameters: 0, bytes: 0 };
    e.tensors += 1;
    e.parameters += numel(t.shape);
    e.bytes += t.end - t.begin;
    by.set(t.dtype, e);
  }
  return [...by.entries()].map(([dtype, e]) => ({ dtype, ...e })).sort((a, b) => b.bytes - a.bytes || a.dtype.localeCompare(b.dtype));
}

/** Reads the summary fields straight from config.json, whatever the architecture. */
export function summarizeConfig(raw: Record<string, unknown>): ConfigSummary {
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const arch = Array.isArray(raw.architectures) && typeof raw.architectures[0] === 'string' ? raw.architectures[0] : null;
  const hiddenSize = num(raw.hidden_size);
  const heads = num(raw.num_attention_heads);
  const headDim = num(raw.head_dim) ?? (hiddenSize !== null && heads ? hiddenSize / heads : null);
  return {
    architecture: arch,
    modelType: typeof raw.model_type === 'string' ? raw.model_type : null,
    layers: num(raw.num_hidden_layers),
    hiddenSize,
    heads,
    kvHeads: num(raw.num_key_value_heads) ?? heads,
    headDim,
    intermediateSize: num(raw.intermediate_size),
    vocabSize: num(raw.vocab_size),
    tiedEmbeddings: raw.tie_word_embeddings === true,
    maxPositionEmbeddings: num(raw.max_position_embeddings),
    rope: summarizeRope(raw),
  };
}

export function summarizeRope(raw: Record<string, unknown>): RopeSummary {
  const obj = (v: unknown): Record<string, unknown> | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
  const params = obj(raw.rope_parameters);
  const scaling = obj(raw.rope_scaling);
  const writtenAs = ['rope_theta', 'rope_scaling', 'rope_parameters'].filter((k) => raw[k] !== undefined && raw[k] !== null);
  const thetaRaw = params?.rope_theta ?? raw.rope_theta ?? scaling?.rope_theta;
  const from = params && (params.rope_type !== undefined || params.type !== undefined) ? params : scaling;
  const type = from ? String(from.rope_type ?? from.type ?? 'default') : 'default';
  const rest = Object.fromEntries(Object.entries(from ?? {}).filter(([k]) => !['rope_theta', 'rope_type', 'type'].includes(k)));
  return { writtenAs, theta: typeof thetaRaw === 'number' ? thetaRaw : null, type, scaling: rest };
}

/** Human-readable lines of an inspection (the command prints them). */
export function formatInspection(r: InspectResult): string[] {
  const c = r.config;
  const v = (x: number | null) => (x === null ? '?' : String(x));
  const rope = c.rope;
  const ropeExtra = Object.entries(rope.scaling).map(([k, x]) => `${k}=${JSON.stringify(x)}`).join(', ');
  const lines = [
    `${r.dir}`,
    `architecture: ${c.architecture ?? '?'} (model_type ${c.modelType ?? '?'})${r.supported ? '' : `  unsupported: ${r.unsupportedReason}`}`,
    `layers ${v(c.layers)}, hidden ${v(c.hiddenSize)}, heads ${v(c.heads)}, kv heads ${v(c.kvHeads)}, head dim ${v(c.headDim)}, intermediate ${v(c.intermediateSize)}, vocab ${v(c.vocabSize)}, tied embeddings ${c.tiedEmbeddings ? 'yes' : 'no'}`,
    `rope: theta ${rope.theta ?? 'default'}, type ${rope.type}${ropeExtra ? ` (${ropeExtra})` : ''}; written as ${rope.writtenAs.length ? rope.writtenAs.join(' + ') : 'nothing (defaults)'}`,
    `tensors ${r.tensorCount}, parameters ${r.parameterCount.toLocaleString('en-US')}, ${formatBytes(r.totalBytes)}`,
    ...r.dtypes.map((d) => `  ${d.dtype.padEnd(8)} ${String(d.tensors).padStart(5)} tensors  ${d.parameters.toLocaleString('en-US').padStart(16)} params  ${formatBytes(d.bytes).padStart(9)}`),
    `files (${r.indexed ? 'sharded, with index' : 'single file'}):`,
    ...r.shards.map((s) => `  ${s.file}  ${s.tensors} tensors  ${formatBytes(s.bytes)}`),
    `validation: ${r.validation.ok ? 'ok' : 'FAILED'}`,
    ...r.validation.checks.map((k) => `  [${k.ok ? 'ok' : 'FAIL'}] ${k.check}: ${k.detail}`),
    ...r.validation.warnings.map((w) => `  [warn] ${w}`),
  ];
  return lines;
}
