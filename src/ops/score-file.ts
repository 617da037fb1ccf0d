/**
 * Score files (APEX-METHOD §7): `analysis/stats.safetensors` and `stages/<n>/scores.safetensors`
 * hold, per layer, the rank-count scores that select the next stage's units, plus the raw
 * averaged norms (for the `avg` ablation and reports):
 *
 *   model.layers.{i}.self_attn.apex.score          F32 [units]  (KV groups under GQA)
 *   model.layers.{i}.self_attn.apex.norm_avg       F32 [units]
 *   model.layers.{i}.self_attn.apex.head_norm_avg  F32 [H]      (per query head)
 *   model.layers.{i}.mlp.apex.score                F32 [I]
 *   model.layers.{i}.mlp.apex.norm_avg             F32 [I]
 *
 * Metadata: format = pt, apex_format = scores, micro_batches, plus what the caller adds. Every
 * layer must carry both scores; norm tensors are optional on reading.
 */
import { writeSafetensors, f32Tensor, type TensorToWrite } from '../io/safetensors-writer.js';
import type { ModelSpec } from '../model/model-spec.js';
import { ApexFileFormatError, loadApexTensorFile, parseLayerIndex, requireFinite, type LoadedTensor } from './apex-tensor-file.js';
import type { RankCountRecorder } from './rank-counts.js';
import type { LayerScoreInput } from './selection.js';

export const SCORES_FORMAT = 'scores';

export interface LayerScoreRecord {
  readonly layer: number;
  /** [units] summed rank counts of the head units. */
  readonly headScore: Float32Array;
  /** [units] averaged head-unit norms. */
  readonly headNormAvg?: Float32Array;
  /** [H] averaged per-query-head norms. */
  readonly queryHeadNormAvg?: Float32Array;
  /** [I] summed rank counts of the channels. */
  readonly channelScore: Float32Array;
  /** [I] averaged channel norms. */
  readonly channelNormAvg?: Float32Array;
}

export interface ScoreFile {
  readonly metadata: Readonly<Record<string, string>>;
  readonly microBatches: number;
  /** One record per layer, in layer order. */
  readonly layers: LayerScoreRecord[];
}

const FIELDS = {
  self_attn: { score: 'headScore', norm_avg: 'headNormAvg', head_norm_avg: 'queryHeadNormAvg' },
  mlp: { score: 'channelScore', norm_avg: 'channelNormAvg' },
} as const;
const NAME = /^model\.layers\.([0-9]+)\.(self_attn|mlp)\.apex\.([a-z_]+)$/;

export function scoreTensorName(layer: number, kind: 'self_attn' | 'mlp', field: string): string {
  return `model.layers.${layer}.${kind}.apex.${field}`;
}

/** Score records of every layer from a recorder (counts and averaged norms, as float32). */
export function scoreRecordsFromRecorder(rec: RankCountRecorder): LayerScoreRecord[] {
  return Array.from({ length: rec.shape.numLayers }, (_, layer) => ({
    layer,
    headScore: Float32Array.from(rec.headScores(layer)),
    headNormAvg: Float32Array.from(rec.headUnitNormAvg(layer)),
    queryHeadNormAvg: Float32Array.from(rec.headNormAvg(layer)),
    channelScore: Float32Array.from(rec.channelScores(layer)),
    channelNormAvg: Float32Array.from(rec.channelNormAvg(layer)),
  }));
}

/** Selection input from score records; `avg` is available only where the norms were stored. */
export function selectionInputs(records: readonly LayerScoreRecord[]): LayerScoreInput[] {
  return records.map((r) => ({
    heads: { rank: r.headScore, ...(r.headNormAvg ? { avg: r.headNormAvg } : {}) },
    channels: { rank: r.channelScore, ...(r.channelNormAvg ? { avg: r.channelNormAvg } : {}) },
  }));
}

export function scoreTensors(records: readonly LayerScoreRecord[]): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  for (const r of records) {
    for (const kind of ['self_attn', 'mlp'] as const) {
      for (const [field, key] of Object.entries(FIELDS[kind])) {
        const v = (r as unknown as Record<string, Float32Array | undefined>)[key];
        if (v) out.push(f32Tensor(scoreTensorName(r.layer, kind, field), [v.length], v));
      }
    }
  }
  return out;
}

/** Writes a score file atomically. */
/** The k of the Top-k/Min-k counts (§2): of the head units (KV groups under GQA) and of the channels. */
export interface CountingK {
  readonly headK: number;
  readonly channelK: number;
}

/** How a score file records the k its rank counts were made with (metadata `head_k`, `channel_k`). */
export function countingKMetadata(k: CountingK): Record<string, string> {
  return { head_k: String(k.headK), channel_k: String(k.channelK) };
}

/** The counting k a score file records, or undefined for files written before it was recorded (2026-11-27). */
export function recordedCountingK(metadata: Readonly<Record<string, string>>): CountingK | undefined {
  const headK = Number(metadata.head_k);
  const channelK = Number(metadata.channel_k);
  if (metadata.head_k === undefined || metadata.channel_k === undefined || !Number.isSafeInteger(headK) || !Number.isSafeInteger(channelK)) return undefined;
  return { headK, channelK };
}

/**
 * Why counts made with the recorded k cannot select with `wanted` (§2: the counting k is the
 * selection size), or undefined when they can or the file does not record its k.
 */
export function countingKMismatch(metadata: Readonly<Record<string, string>>, wanted: CountingK): string | undefined {
  const recorded = recordedCountingK(metadata);
  if (recorded === undefined || (recorded.headK === wanted.headK && recorded.channelK === wanted.channelK)) return undefined;
  return `counted the Top-k/Min-k ranks with k = ${recorded.headK} head units and ${recorded.channelK} channels per layer, but this stage selects ${wanted.headK} and ${wanted.channelK} (--ratio, --decay-k and the stage set k, and counting and selecting use one k)`;
}

export async function writeScoreFile(path: string, records: readonly LayerScoreRecord[], microBatches: number, metadata: Record<string, string> = {}): Promise<void> {
  await writeSafetensors(path, scoreTensors(records), { ...metadata, format: 'pt', apex_format: SCORES_FORMAT, micro_batches: String(microBatches) });
}

export async function readScoreFile(path: string, spec: ModelSpec): Promise<ScoreFile> {
  const loaded = await loadApexTensorFile(path);
  return parseScoreFile(path, loaded.metadata, loaded.tensors, spec);
}

/** Validates a score file's content against the model (pure). */
export function parseScoreFile(file: string, metadata: Readonly<Record<string, string>>, tensors: ReadonlyMap<string, LoadedTensor>, spec: ModelSpec): ScoreFile {
  if (metadata.apex_format !== SCORES_FORMAT) {
    throw new ApexFileFormatError(file, 'metadata-apex_format', `metadata 'apex_format' is ${JSON.stringify(metadata.apex_format)}, expected "${SCORES_FORMAT}" (not a score file)`);
  }
  const microBatches = Number(metadata.micro_batches);
  if (metadata.micro_batches === undefined || !/^[0-9]+$/.test(metadata.micro_batches) || !Number.isSafeInteger(microBatches)) {
    throw new ApexFileFormatError(file, 'metadata-micro_batches', `metadata 'micro_batches' is ${JSON.stringify(metadata.micro_batches)}, expected a non-negative integer`);
  }
  const sizes: Record<string, number> = { score: spec.numKvHeads, norm_avg: spec.numKvHeads, head_norm_avg: spec.numHeads };
  const layers = Array.from({ length: spec.numLayers }, () => ({}) as Record<string, Float32Array>);
  for (const [name, t] of tensors) {
    const m = NAME.exec(name);
    const layer = m ? parseLayerIndex(m[1]!) : undefined;
    if (!m || layer === undefined) throw new ApexFileFormatError(file, 'tensor-name', 'not a score tensor name (model.layers.{i}.self_attn|mlp.apex.{field})', name);
    const kind = m[2] as 'self_attn' | 'mlp';
    const key = (FIELDS[kind] as Record<string, string>)[m[3]!];
    if (key === undefined) throw new ApexFileFormatError(file, 'tensor-name', `unknown field '${m[3]}' for ${kind} (allowed: ${Object.keys(FIELDS[kind]).join(', ')})`, name);
    if (layer >= spec.numLayers) throw new ApexFileFormatError(file, 'layer-range', `layer ${layer} does not exist (the model has ${spec.numLayers})`, name);
    if (t.dtype !== 'F32') throw new ApexFileFormatError(file, 'dtype', `dtype ${t.dtype}, expected F32`, name);
    const size = kind === 'mlp' ? spec.intermediateSize : sizes[m[3]!]!;
    if (t.shape.length !== 1 || t.shape[0] !== size) throw new ApexFileFormatError(file, 'shape', `shape [${t.shape}], expected [${size}]`, name);
    requireFinite(file, name, t.values);
    layers[layer]![key] = t.values as Float32Array;
  }
  const records = layers.map((l, layer) => {
    for (const [kind, key] of [['self_attn', 'headScore'], ['mlp', 'channelScore']] as const) {
      if (!l[key]) throw new ApexFileFormatError(file, 'missing-tensor', `layer ${layer} has no ${kind} score (a score file covers every layer)`, scoreTensorName(layer, kind, 'score'));
    }
    return { layer, ...l } as unknown as LayerScoreRecord;
  });
  return { metadata, microBatches, layers: records };
}
