/**
 * `operators.safetensors`: one stage's APEX operators and selections (format described in
 * docs/operator-format.md). Writing lays out the tensors of every layer that has operators;
 * reading validates the whole file against the model before anything uses it, rule by rule,
 * each failure an ApexFileFormatError naming the tensor and the rule.
 */
import { writeSafetensors, f32Tensor, i32Tensor, type TensorToWrite } from '../io/safetensors-writer.js';
import type { ModelSpec } from '../model/model-spec.js';
import { ApexFileFormatError, loadApexTensorFile, parseLayerIndex, requireFinite, type LoadedTensor } from './apex-tensor-file.js';
import { monarchBlocks } from './monarch.js';
import type { ChannelOperator, HeadOperator, LayerOperators } from './operator-init.js';

export const OPERATORS_FORMAT = 'operators';
export const TRAINING_SETTINGS = ['operators', 'structured', 'full'] as const;
export type TrainingSetting = (typeof TRAINING_SETTINGS)[number];

export interface OperatorFileMeta {
  readonly apexVersion: string;
  readonly stage: number;
  readonly ratio: number;
  readonly setting: TrainingSetting;
  readonly seed: number;
}

export interface OperatorFile {
  readonly meta: OperatorFileMeta;
  /** Layers that carry at least one operator, ascending. */
  readonly layers: LayerOperators[];
}

const ATTN = 'self_attn';
const MLP = 'mlp';
const NAME = /^model\.layers\.([0-9]+)\.(self_attn|mlp)\.apex\.([A-Za-z0-9_]+)$/;
const ATTN_FIELDS = ['P', 'N', 'E', 'B1', 'B2', 'a', 'b_v'] as const;
const MLP_FIELDS = ['P', 'N', 'E', 'B1', 'B2', 'a', 'b_gate', 'b_up'] as const;
const INDEX_FIELDS = new Set(['P', 'N', 'E']);

export function operatorTensorName(layer: number, kind: 'self_attn' | 'mlp', field: string): string {
  return `model.layers.${layer}.${kind}.apex.${field}`;
}

/** The tensors of an operator file, in the documented names and shapes. */
export function operatorTensors(layers: readonly LayerOperators[], headDim: number): TensorToWrite[] {
  const out: TensorToWrite[] = [];
  const common = (layer: number, kind: 'self_attn' | 'mlp', op: HeadOperator | ChannelOperator) => {
    const name = (f: string) => operatorTensorName(layer, kind, f);
    out.push(i32Tensor(name('P'), [op.P.length], op.P), i32Tensor(name('N'), [op.N.length], op.N));
    if (op.E && op.E.length > 0) out.push(i32Tensor(name('E'), [op.E.length], op.E));
    out.push(f32Tensor(name('B1'), [op.nb, op.bs, op.bs], op.B1), f32Tensor(name('B2'), [op.nb, op.bs, op.bs], op.B2));
    out.push(f32Tensor(name('a'), [op.a.length], op.a));
  };
  for (const l of layers) {
    if (l.attn) {
      if (l.attn.a.length !== l.attn.P.length * headDim) throw new RangeError(`layer ${l.layer}: head operator size ${l.attn.a.length} is not k·d_h = ${l.attn.P.length}·${headDim}`);
      common(l.layer, ATTN, l.attn);
      out.push(f32Tensor(operatorTensorName(l.layer, ATTN, 'b_v'), [l.attn.bV.length], l.attn.bV));
    }
    if (l.mlp) {
      common(l.layer, MLP, l.mlp);
      out.push(f32Tensor(operatorTensorName(l.layer, MLP, 'b_gate'), [l.mlp.bGate.length], l.mlp.bGate));
      out.push(f32Tensor(operatorTensorName(l.layer, MLP, 'b_up'), [l.mlp.bUp.length], l.mlp.bUp));
    }
  }
  return out;
}

export function operatorMetadata(meta: OperatorFileMeta): Record<string, string> {
  return {
    format: 'pt',
    apex_format: OPERATORS_FORMAT,
    apex_version: meta.apexVersion,
    stage: String(meta.stage),
    ratio: String(meta.ratio),
    setting: meta.setting,
    seed: String(meta.seed),
  };
}

/** Writes operators.safetensors atomically. */
export async function writeOperatorFile(path: string, layers: readonly LayerOperators[], meta: OperatorFileMeta, headDim: number): Promise<void> {
  await writeSafetensors(path, operatorTensors(layers, headDim), operatorMetadata(meta));
}

/** Reads and validates operators.safetensors against the model it will be applied to. */
export async function readOperatorFile(path: string, spec: ModelSpec): Promise<OperatorFile> {
  const loaded = await loadApexTensorFile(path);
  return parseOperatorFile(path, loaded.metadata, loaded.tensors, spec);
}

function parseMeta(file: string, md: Readonly<Record<string, string>>): OperatorFileMeta {
  const bad = (key: string, detail: string) => new ApexFileFormatError(file, `metadata-${key}`, `metadata '${key}' ${detail}`);
  if (md.apex_format !== OPERATORS_FORMAT) throw bad('apex_format', `is ${JSON.stringify(md.apex_format)}, expected "${OPERATORS_FORMAT}" (not an operators file)`);
  if (md.format !== 'pt') throw bad('format', `is ${JSON.stringify(md.format)}, expected "pt"`);
  if (typeof md.apex_version !== 'string' || md.apex_version === '') throw bad('apex_version', 'is missing');
  const stage = Number(md.stage);
  if (md.stage === undefined || !/^[1-9][0-9]*$/.test(md.stage) || !Number.isSafeInteger(stage)) throw bad('stage', `is ${JSON.stringify(md.stage)}, expected a positive integer`);
  const ratio = Number(md.ratio);
  if (md.ratio === undefined || md.ratio.trim() === '' || !Number.isFinite(ratio) || ratio <= 0 || ratio > 1) throw bad('ratio', `is ${JSON.stringify(md.ratio)}, expected a number in (0, 1]`);
  if (!(TRAINING_SETTINGS as readonly string[]).includes(md.setting ?? '')) throw bad('setting', `is ${JSON.stringify(md.setting)}, expected one of ${TRAINING_SETTINGS.join(', ')}`);
  const seed = Number(md.seed);
  if (md.seed === undefined || !/^-?[0-9]+$/.test(md.seed) || !Number.isSafeInteger(seed)) throw bad('seed', `is ${JSON.stringify(md.seed)}, expected an integer`);
  return { apexVersion: md.apex_version, stage, ratio, setting: md.setting as TrainingSetting, seed };
}

/**
 * Validates the content of an operator file (pure: tests feed it tensors directly). Rules, in
 * order: metadata; tensor names; dtypes; complete field sets; P/N/E shapes; index ranges;
 * duplicates and overlaps; Monarch factor shapes (nb/bs rule); a/b sizes; finite values.
 */
export function parseOperatorFile(file: string, metadata: Readonly<Record<string, string>>, tensors: ReadonlyMap<string, LoadedTensor>, spec: ModelSpec): OperatorFile {
  const meta = parseMeta(file, metadata);
  const byLayer = new Map<number, { attn: Map<string, LoadedTensor>; mlp: Map<string, LoadedTensor> }>();
  for (const [name, t] of tensors) {
    const m = NAME.exec(name);
    const layer = m ? parseLayerIndex(m[1]!) : undefined;
    if (!m || layer === undefined) throw new ApexFileFormatError(file, 'tensor-name', 'not an operator tensor name (model.layers.{i}.self_attn|mlp.apex.{field})', name);
    const kind = m[2] as 'self_attn' | 'mlp';
    const field = m[3]!;
    const allowed: readonly string[] = kind === ATTN ? ATTN_FIELDS : MLP_FIELDS;
    if (!allowed.includes(field)) throw new ApexFileFormatError(file, 'tensor-name', `unknown field '${field}' for ${kind} (allowed: ${allowed.join(', ')})`, name);
    if (layer >= spec.numLayers) throw new ApexFileFormatError(file, 'layer-range', `layer ${layer} does not exist (the model has ${spec.numLayers})`, name);
    const want = INDEX_FIELDS.has(field) ? 'I32' : 'F32';
    if (t.dtype !== want) throw new ApexFileFormatError(file, 'dtype', `dtype ${t.dtype}, expected ${want}`, name);
    let entry = byLayer.get(layer);
    if (!entry) byLayer.set(layer, (entry = { attn: new Map(), mlp: new Map() }));
    (kind === ATTN ? entry.attn : entry.mlp).set(field, t);
  }
  const layers: LayerOperators[] = [];
  for (const layer of [...byLayer.keys()].sort((x, y) => x - y)) {
    const entry = byLayer.get(layer)!;
    const attn = entry.attn.size > 0 ? parseHeadOperator(file, layer, entry.attn, spec) : undefined;
    const mlp = entry.mlp.size > 0 ? parseChannelOperator(file, layer, entry.mlp, spec) : undefined;
    layers.push({ layer, ...(attn ? { attn } : {}), ...(mlp ? { mlp } : {}) });
  }
  return { meta, layers };
}

interface ParsedCommon {
  P: Int32Array;
  N: Int32Array;
  E?: Int32Array;
  B1: Float32Array;
  B2: Float32Array;
  nb: number;
  bs: number;
  a: Float32Array;
}

function parseCommon(file: string, layer: number, kind: 'self_attn' | 'mlp', fields: Map<string, LoadedTensor>, required: readonly string[], units: number, unitSize: number): { common: ParsedCommon; vec: (f: string) => Float32Array } {
  const name = (f: string) => operatorTensorName(layer, kind, f);
  for (const f of required) {
    if (!fields.has(f)) throw new ApexFileFormatError(file, 'missing-tensor', `layer ${layer} has ${kind} operator tensors but not '${f}' (a ${kind} operator needs ${required.join(', ')})`, name(f));
  }
  const indices = (f: string): Int32Array => {
    const t = fields.get(f)!;
    if (t.shape.length !== 1 || t.shape[0]! < 1) throw new ApexFileFormatError(file, 'index-shape', `shape [${t.shape}], expected a non-empty vector [k]`, name(f));
    const v = t.values as Int32Array;
    const seen = new Set<number>();
    for (const u of v) {
      if (u < 0 || u >= units) throw new ApexFileFormatError(file, 'index-range', `unit ${u} outside 0..${units - 1}`, name(f));
      if (seen.has(u)) throw new ApexFileFormatError(file, 'index-duplicate', `unit ${u} appears twice`, name(f));
      seen.add(u);
    }
    return v;
  };
  const P = indices('P');
  const N = indices('N');
  if (P.length !== N.length) throw new ApexFileFormatError(file, 'pn-size', `|N| = ${N.length} but |P| = ${P.length}`, name('N'));
  const inP = new Set(P);
  for (const u of N) if (inP.has(u)) throw new ApexFileFormatError(file, 'pn-overlap', `unit ${u} is in both P and N`, name('N'));
  const E = fields.has('E') ? indices('E') : undefined;
  if (E) {
    const inN = new Set(N);
    for (const u of E) if (inP.has(u) || inN.has(u)) throw new ApexFileFormatError(file, 'e-overlap', `unit ${u} is also in ${inP.has(u) ? 'P' : 'N'}`, name('E'));
  }
  const n = P.length * unitSize;
  const { nb, bs } = monarchBlocks(n);
  const factorOf = (f: string): Float32Array => {
    const t = fields.get(f)!;
    if (t.shape.length !== 3 || t.shape[0] !== nb || t.shape[1] !== bs || t.shape[2] !== bs) {
      throw new ApexFileFormatError(file, 'monarch-shape', `shape [${t.shape}], expected [${nb}, ${bs}, ${bs}] (operator size n = ${n}, nb = the divisor of n closest to √n)`, name(f));
    }
    return finite(t, f);
  };
  const finite = (t: LoadedTensor, f: string): Float32Array => {
    requireFinite(file, name(f), t.values);
    return t.values as Float32Array;
  };
  const vec = (f: string): Float32Array => {
    const t = fields.get(f)!;
    if (t.shape.length !== 1 || t.shape[0] !== n) throw new ApexFileFormatError(file, 'vector-shape', `shape [${t.shape}], expected [${n}] (operator size n = ${kind === ATTN ? `k·d_h = ${P.length}·${unitSize}` : `k = ${P.length}`})`, name(f));
    return finite(t, f);
  };
  const B1 = factorOf('B1');
  const B2 = factorOf('B2');
  const a = vec('a');
  return { common: { P, N, ...(E ? { E } : {}), B1, B2, nb, bs, a }, vec };
}

function parseHeadOperator(file: string, layer: number, fields: Map<string, LoadedTensor>, spec: ModelSpec): HeadOperator {
  const { common, vec } = parseCommon(file, layer, ATTN, fields, ['P', 'N', 'B1', 'B2', 'a', 'b_v'], spec.numKvHeads, spec.headDim);
  return { ...common, bV: vec('b_v') };
}

function parseChannelOperator(file: string, layer: number, fields: Map<string, LoadedTensor>, spec: ModelSpec): ChannelOperator {
  const { common, vec } = parseCommon(file, layer, MLP, fields, ['P', 'N', 'B1', 'B2', 'a', 'b_gate', 'b_up'], spec.intermediateSize, 1);
  return { ...common, bGate: vec('b_gate'), bUp: vec('b_up') };
}
