/**
 * The supported architectures described as data, in one place: for every tensor of a decoder
 * layer its name template, role, which axis carries which units, and which APEX rule applies
 * (APEX-METHOD §3); plus the global tensors. The forward pass, fusion, unit selection and
 * training all read this table instead of matching tensor names themselves.
 */
import { InputError } from '../errors.js';
import type { ProjectionKey } from './layer-hooks.js';
import type { ModelSpec, SupportedArchitecture } from './model-spec.js';

export type LayerRole = ProjectionKey | 'input_layernorm' | 'post_attention_layernorm';
/** head: query heads (H·dh rows/cols); kv-head: KV heads (nKv·dh rows); channel: FFN channels (I). */
export type UnitKind = 'head' | 'kv-head' | 'channel' | 'none';
/** output-side: units are rows, mixed by M and scaled by a/b; input-side: units are columns; direct-only: q/k, never mixed. */
export type ApexRule = 'output-side' | 'input-side' | 'direct-only' | 'none';
type Dim = 'hidden' | 'q' | 'kv' | 'intermediate' | 'vocab';
/** A ModelSpec flag that must be true for an optional tensor (a bias) to exist. */
type PresenceFlag = 'qkvBias' | 'oBias' | 'mlpBias';

export interface LayerTensorDescriptor {
  /** Checkpoint name with `{i}` for the layer index. */
  readonly template: string;
  readonly role: LayerRole;
  readonly param: 'weight' | 'bias';
  readonly shape: readonly Dim[];
  readonly units: UnitKind;
  readonly unitAxis: 'rows' | 'cols' | 'none';
  readonly rule: ApexRule;
  readonly presentWhen?: PresenceFlag;
}

export type GlobalRole = 'embed_tokens' | 'final_norm' | 'lm_head';
export interface GlobalTensorDescriptor {
  readonly name: string;
  readonly role: GlobalRole;
  readonly shape: readonly Dim[];
  /** lm_head exists only when the embeddings are not tied. */
  readonly untiedOnly?: boolean;
}

export interface ArchitectureTable {
  readonly layer: readonly LayerTensorDescriptor[];
  readonly globals: readonly GlobalTensorDescriptor[];
  /** Extra tensors some exporters write that carry nothing the model needs: warned about and ignored. */
  readonly ignorable: readonly RegExp[];
}

const attn = (p: ProjectionKey, param: 'weight' | 'bias') => `model.layers.{i}.self_attn.${p}.${param}`;
const mlp = (p: ProjectionKey, param: 'weight' | 'bias') => `model.layers.{i}.mlp.${p}.${param}`;

/** The LLaMA decoder layer; Mistral and Qwen2 differ only in which biases their configs switch on. */
const LLAMA_LAYER: readonly LayerTensorDescriptor[] = [
  { template: 'model.layers.{i}.input_layernorm.weight', role: 'input_layernorm', param: 'weight', shape: ['hidden'], units: 'none', unitAxis: 'none', rule: 'none' },
  { template: attn('q_proj', 'weight'), role: 'q_proj', param: 'weight', shape: ['q', 'hidden'], units: 'head', unitAxis: 'rows', rule: 'direct-only' },
  { template: attn('q_proj', 'bias'), role: 'q_proj', param: 'bias', shape: ['q'], units: 'head', unitAxis: 'rows', rule: 'direct-only', presentWhen: 'qkvBias' },
  { template: attn('k_proj', 'weight'), role: 'k_proj', param: 'weight', shape: ['kv', 'hidden'], units: 'kv-head', unitAxis: 'rows', rule: 'direct-only' },
  { template: attn('k_proj', 'bias'), role: 'k_proj', param: 'bias', shape: ['kv'], units: 'kv-head', unitAxis: 'rows', rule: 'direct-only', presentWhen: 'qkvBias' },
  { template: attn('v_proj', 'weight'), role: 'v_proj', param: 'weight', shape: ['kv', 'hidden'], units: 'kv-head', unitAxis: 'rows', rule: 'output-side' },
  { template: attn('v_proj', 'bias'), role: 'v_proj', param: 'bias', shape: ['kv'], units: 'kv-head', unitAxis: 'rows', rule: 'output-side', presentWhen: 'qkvBias' },
  { template: attn('o_proj', 'weight'), role: 'o_proj', param: 'weight', shape: ['hidden', 'q'], units: 'head', unitAxis: 'cols', rule: 'input-side' },
  { template: attn('o_proj', 'bias'), role: 'o_proj', param: 'bias', shape: ['hidden'], units: 'none', unitAxis: 'none', rule: 'none', presentWhen: 'oBias' },
  { template: 'model.layers.{i}.post_attention_layernorm.weight', role: 'post_attention_layernorm', param: 'weight', shape: ['hidden'], units: 'none', unitAxis: 'none', rule: 'none' },
  { template: mlp('gate_proj', 'weight'), role: 'gate_proj', param: 'weight', shape: ['intermediate', 'hidden'], units: 'channel', unitAxis: 'rows', rule: 'output-side' },
  { template: mlp('gate_proj', 'bias'), role: 'gate_proj', param: 'bias', shape: ['intermediate'], units: 'channel', unitAxis: 'rows', rule: 'output-side', presentWhen: 'mlpBias' },
  { template: mlp('up_proj', 'weight'), role: 'up_proj', param: 'weight', shape: ['intermediate', 'hidden'], units: 'channel', unitAxis: 'rows', rule: 'output-side' },
  { template: mlp('up_proj', 'bias'), role: 'up_proj', param: 'bias', shape: ['intermediate'], units: 'channel', unitAxis: 'rows', rule: 'output-side', presentWhen: 'mlpBias' },
  { template: mlp('down_proj', 'weight'), role: 'down_proj', param: 'weight', shape: ['hidden', 'intermediate'], units: 'channel', unitAxis: 'cols', rule: 'input-side' },
  { template: mlp('down_proj', 'bias'), role: 'down_proj', param: 'bias', shape: ['hidden'], units: 'none', unitAxis: 'none', rule: 'none', presentWhen: 'mlpBias' },
];

const LLAMA_GLOBALS: readonly GlobalTensorDescriptor[] = [
  { name: 'model.embed_tokens.weight', role: 'embed_tokens', shape: ['vocab', 'hidden'] },
  { name: 'model.norm.weight', role: 'final_norm', shape: ['hidden'] },
  { name: 'lm_head.weight', role: 'lm_head', shape: ['vocab', 'hidden'], untiedOnly: true },
];

const LLAMA_IGNORABLE: readonly RegExp[] = [/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/, /^model\.rotary_emb\.inv_freq$/];

const LLAMA_TABLE: ArchitectureTable = { layer: LLAMA_LAYER, globals: LLAMA_GLOBALS, ignorable: LLAMA_IGNORABLE };

export const ARCHITECTURE_TABLES: Readonly<Record<SupportedArchitecture, ArchitectureTable>> = {
  LlamaForCausalLM: LLAMA_TABLE,
  MistralForCausalLM: LLAMA_TABLE,
  Qwen2ForCausalLM: LLAMA_TABLE,
};

/** A layer tensor of one concrete model: name resolved, shape in numbers. */
export interface LayerTensor extends LayerTensorDescriptor {
  readonly name: string;
  readonly layer: number;
  readonly dims: readonly number[];
}

export interface GlobalTensor extends GlobalTensorDescriptor {
  readonly dims: readonly number[];
}

function dimSize(spec: ModelSpec, d: Dim): number {
  switch (d) {
    case 'hidden': return spec.hiddenSize;
    case 'q': return spec.numHeads * spec.headDim;
    case 'kv': return spec.numKvHeads * spec.headDim;
    case 'intermediate': return spec.intermediateSize;
    case 'vocab': return spec.vocabSize;
  }
}

/** The tensors layer `i` of this model has, in table order (biases only when the config has them). */
export function layerTensors(spec: ModelSpec, i: number): LayerTensor[] {
  return ARCHITECTURE_TABLES[spec.architecture].layer
    .filter((t) => t.presentWhen === undefined || spec[t.presentWhen])
    .map((t) => ({ ...t, name: t.template.replace('{i}', String(i)), layer: i, dims: t.shape.map((d) => dimSize(spec, d)) }));
}

export function layerTensorNames(spec: ModelSpec, i: number): string[] {
  return layerTensors(spec, i).map((t) => t.name);
}

/** The layer tensor with a given role and param (weight or bias), if this model has it. */
export function findLayerTensor(spec: ModelSpec, i: number, role: LayerRole, param: 'weight' | 'bias' = 'weight'): LayerTensor | undefined {
  return layerTensors(spec, i).find((t) => t.role === role && t.param === param);
}

export function globalTensors(spec: ModelSpec): GlobalTensor[] {
  return ARCHITECTURE_TABLES[spec.architecture].globals
    .filter((g) => !g.untiedOnly || !spec.tieWordEmbeddings)
    .map((g) => ({ ...g, dims: g.shape.map((d) => dimSize(spec, d)) }));
}

/** Checkpoint name of a global role; lm_head resolves to the embeddings when they are tied. */
export function globalTensorName(spec: ModelSpec, role: GlobalRole): string {
  const table = ARCHITECTURE_TABLES[spec.architecture].globals;
  const wanted = role === 'lm_head' && spec.tieWordEmbeddings ? 'embed_tokens' : role;
  return table.find((g) => g.role === wanted)!.name;
}

/** Every tensor name a checkpoint of this model must contain, with its shape. */
export function expectedTensors(spec: ModelSpec): Map<string, readonly number[]> {
  const out = new Map<string, readonly number[]>();
  for (const g of globalTensors(spec)) out.set(g.name, g.dims);
  for (let i = 0; i < spec.numLayers; i++) for (const t of layerTensors(spec, i)) out.set(t.name, t.dims);
  return out;
}

const FLOAT_STORAGE = new Set(['F32', 'F16', 'BF16', 'F64']);

/**
 * Checks that a checkpoint holds exactly the tensors the model needs, with the right shapes and
 * float dtypes. Missing, misshapen or unexpected tensors are InputErrors naming the tensor;
 * known-harmless extras (rotary inv_freq buffers, an lm_head next to tied embeddings) come back
 * as warnings.
 */
export function checkCheckpointTensors(
  spec: ModelSpec,
  tensors: readonly { name: string; shape: readonly number[]; dtype: string }[],
  source: string,
): { warnings: string[] } {
  const expected = expectedTensors(spec);
  const table = ARCHITECTURE_TABLES[spec.architecture];
  const byName = new Map(tensors.map((t) => [t.name, t]));
  // Every problem is collected, so one error names them all (a config with a wrong size breaks
  // every layer's tensors alike); the error takes the first one's code.
  const problems: { code: string; message: string }[] = [];
  for (const [name, dims] of expected) {
    const t = byName.get(name);
    if (!t) {
      problems.push({ code: 'MISSING_TENSOR', message: `missing tensor '${name}' (required by ${spec.architecture} with this config.json)` });
      continue;
    }
    if (t.shape.length !== dims.length || t.shape.some((d, k) => d !== dims[k])) {
      problems.push({ code: 'TENSOR_SHAPE', message: `tensor '${name}' has shape [${t.shape.join(', ')}] but config.json implies [${dims.join(', ')}]` });
    }
    if (!FLOAT_STORAGE.has(t.dtype)) problems.push({ code: 'TENSOR_DTYPE', message: `tensor '${name}' is ${t.dtype}; apex computes with F32/F16/BF16/F64 weights only` });
  }
  const warnings: string[] = [];
  const ignored: string[] = [];
  for (const t of tensors) {
    if (expected.has(t.name)) continue;
    if (table.ignorable.some((re) => re.test(t.name))) {
      ignored.push(t.name);
      continue;
    }
    if (t.name === 'lm_head.weight' && spec.tieWordEmbeddings) {
      warnings.push(`${source}: 'lm_head.weight' is present but tie_word_embeddings is true; using model.embed_tokens.weight as transformers does (a fused output writes the trained embedding into it)`);
      continue;
    }
    problems.push({ code: 'UNEXPECTED_TENSOR', message: `unexpected tensor '${t.name}' (not part of ${spec.architecture} with this config.json)` });
  }
  if (problems.length > 0) {
    const [first, ...rest] = problems;
    const more = rest.length === 0 ? '' : `; ${rest.length} more: ${rest.slice(0, 8).map((p) => p.message).join('; ')}${rest.length > 8 ? '; …' : ''}`;
    throw new InputError(`${source}: ${first!.message}${more}`, first!.code);
  }
  if (ignored.length > 0) warnings.push(`${source}: ignoring ${ignored.length} rotary inv_freq buffer(s) (e.g. '${ignored[0]}'); apex computes rotary frequencies from config.json`);
  return { warnings };
}
