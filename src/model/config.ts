/**
 * config.json → ModelSpec. Accepts exactly the LLaMA-family features the forward pass
 * implements (LLaMA, Mistral, Qwen2; MHA/GQA; biases; default/linear/llama3 rope) and refuses
 * everything else with UnsupportedModelError naming the feature, so a model is never computed
 * silently wrong.
 */
import { InputError, UnsupportedModelError } from '../errors.js';
import type { ModelSpec, RopeSpec, SupportedArchitecture } from './model-spec.js';

const ARCHITECTURES: readonly SupportedArchitecture[] = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'];
const MODEL_TYPES: Readonly<Record<string, SupportedArchitecture>> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
};
/** transformers' defaults when a field is absent (the same in LlamaConfig, MistralConfig, Qwen2Config). */
const DEFAULT_ROPE_THETA = 10000;
const DEFAULT_RMS_EPS = 1e-6;
const DEFAULT_MAX_POSITIONS = 2048;

export function parseModelConfig(raw: Record<string, unknown>, source: string): ModelSpec {
  const where = (field: string) => `${source}: ${field}`;
  const architecture = parseArchitecture(raw, source);
  refuseUnsupportedFeatures(raw, source);

  const hiddenSize = positiveInt(raw, 'hidden_size', source);
  const numLayers = positiveInt(raw, 'num_hidden_layers', source);
  const numHeads = positiveInt(raw, 'num_attention_heads', source);
  const numKvHeads = raw.num_key_value_heads == null ? numHeads : positiveInt(raw, 'num_key_value_heads', source);
  if (numHeads % numKvHeads !== 0) {
    throw new InputError(`${where('num_attention_heads')} ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`, 'BAD_CONFIG');
  }
  let headDim: number;
  if (raw.head_dim == null) {
    if (hiddenSize % numHeads !== 0) throw new InputError(`${where('hidden_size')} ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and no head_dim is given`, 'BAD_CONFIG');
    headDim = hiddenSize / numHeads;
  } else {
    headDim = positiveInt(raw, 'head_dim', source);
  }
  if (headDim % 2 !== 0) throw new UnsupportedModelError(`${where('head_dim')} ${headDim} is odd; rotary embeddings need an even head dimension`);
  const intermediateSize = positiveInt(raw, 'intermediate_size', source);
  const vocabSize = positiveInt(raw, 'vocab_size', source);
  const maxPositionEmbeddings = raw.max_position_embeddings == null ? DEFAULT_MAX_POSITIONS : positiveInt(raw, 'max_position_embeddings', source);
  const rmsNormEps = raw.rms_norm_eps == null ? DEFAULT_RMS_EPS : positiveNumber(raw, 'rms_norm_eps', source);

  const attentionBias = bool(raw, 'attention_bias', false, source);
  const mlpBias = bool(raw, 'mlp_bias', false, source);
  let qkvBias: boolean;
  let oBias: boolean;
  if (architecture === 'Qwen2ForCausalLM') {
    qkvBias = true;
    oBias = false;
  } else if (architecture === 'MistralForCausalLM') {
    if (attentionBias || mlpBias) throw new UnsupportedModelError(`${source}: MistralForCausalLM has no biases in transformers; attention_bias/mlp_bias are not supported for it`);
    qkvBias = false;
    oBias = false;
  } else {
    qkvBias = attentionBias;
    oBias = attentionBias;
  }

  let slidingWindow: number | undefined;
  if (architecture === 'MistralForCausalLM' && raw.sliding_window != null) slidingWindow = positiveInt(raw, 'sliding_window', source);
  if (architecture === 'Qwen2ForCausalLM' && bool(raw, 'use_sliding_window', false, source) && raw.sliding_window != null) {
    slidingWindow = positiveInt(raw, 'sliding_window', source);
  }

  const spec: ModelSpec = {
    architecture,
    numLayers,
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize,
    vocabSize,
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', false, source),
    rmsNormEps,
    rope: parseRope(raw, source),
    qkvBias,
    oBias,
    mlpBias,
    maxPositionEmbeddings,
    eosTokenIds: tokenIds(raw, 'eos_token_id', source),
    ...(slidingWindow !== undefined ? { slidingWindow } : {}),
    ...optionalTokenId(raw, 'bos_token_id', 'bosTokenId', source),
    ...optionalTokenId(raw, 'pad_token_id', 'padTokenId', source),
  };
  return spec;
}

function parseArchitecture(raw: Record<string, unknown>, source: string): SupportedArchitecture {
  const archs = raw.architectures;
  if (archs != null) {
    if (!Array.isArray(archs) || archs.length === 0 || archs.some((a) => typeof a !== 'string')) {
      throw new InputError(`${source}: architectures must be a non-empty list of strings`, 'BAD_CONFIG');
    }
    if (archs.length > 1) throw new UnsupportedModelError(`${source}: several architectures ${JSON.stringify(archs)}; apex supports one of ${ARCHITECTURES.join(', ')}`);
    const a = archs[0] as string;
    if (!(ARCHITECTURES as readonly string[]).includes(a)) {
      throw new UnsupportedModelError(`${source}: architecture '${a}' is not supported (supported: ${ARCHITECTURES.join(', ')})`);
    }
    return a as SupportedArchitecture;
  }
  const mt = raw.model_type;
  if (typeof mt === 'string' && MODEL_TYPES[mt]) return MODEL_TYPES[mt];
  throw new UnsupportedModelError(`${source}: neither 'architectures' nor a supported 'model_type' (${Object.keys(MODEL_TYPES).join(', ')}); got model_type ${JSON.stringify(mt ?? null)}`);
}

/** Fields that change the computation in ways the forward pass does not implement. */
function refuseUnsupportedFeatures(raw: Record<string, unknown>, source: string): void {
  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') throw new UnsupportedModelError(`${source}: hidden_act '${String(act)}' is not supported (only silu)`);
  if (raw.quantization_config != null) throw new UnsupportedModelError(`${source}: quantized checkpoints (quantization_config) are not supported`);
  const prf = raw.partial_rotary_factor ?? (isObject(raw.rope_parameters) ? raw.rope_parameters.partial_rotary_factor : undefined);
  if (prf != null && prf !== 1) throw new UnsupportedModelError(`${source}: partial_rotary_factor ${String(prf)} is not supported (only 1)`);
  const layerTypes = raw.layer_types;
  if (Array.isArray(layerTypes) && layerTypes.some((t) => t !== 'full_attention' && t !== 'sliding_attention')) {
    throw new UnsupportedModelError(`${source}: layer_types ${JSON.stringify([...new Set(layerTypes)])} include attention kinds apex does not implement`);
  }
}

function parseRope(raw: Record<string, unknown>, source: string): RopeSpec {
  const params = raw.rope_parameters;
  const scaling = raw.rope_scaling;
  if (params != null && !isObject(params)) throw new InputError(`${source}: rope_parameters must be an object`, 'BAD_CONFIG');
  if (scaling != null && !isObject(scaling)) throw new InputError(`${source}: rope_scaling must be an object or null`, 'BAD_CONFIG');
  if (isObject(params) && !('rope_theta' in params) && !('rope_type' in params) && Object.keys(params).length > 0 && Object.values(params).every(isObject)) {
    throw new UnsupportedModelError(`${source}: per-layer-type rope_parameters (${Object.keys(params).join(', ')}) are not supported`);
  }
  let theta: number;
  let sourceForm: RopeSpec['source'];
  if (isObject(params) && params.rope_theta != null) {
    theta = positiveNumber(params, 'rope_theta', `${source} rope_parameters`);
    sourceForm = 'rope_parameters';
  } else if (raw.rope_theta != null) {
    theta = positiveNumber(raw, 'rope_theta', source);
    sourceForm = 'rope_theta';
  } else if (isObject(scaling) && scaling.rope_theta != null) {
    theta = positiveNumber(scaling, 'rope_theta', `${source} rope_scaling`);
    sourceForm = 'rope_theta';
  } else {
    theta = DEFAULT_ROPE_THETA;
    sourceForm = 'default';
  }
  // Scaling: rope_parameters (transformers 5) wins; else the older rope_scaling.
  const scalingFrom = isObject(params) && (params.rope_type != null || params.type != null) ? params : isObject(scaling) ? scaling : undefined;
  const where = scalingFrom === params ? `${source} rope_parameters` : `${source} rope_scaling`;
  const typeRaw = scalingFrom ? (scalingFrom.rope_type ?? scalingFrom.type ?? 'default') : 'default';
  if (typeof typeRaw !== 'string') throw new InputError(`${where}: rope_type must be a string`, 'BAD_CONFIG');
  switch (typeRaw) {
    case 'default':
      return { theta, type: 'default', source: sourceForm };
    case 'linear': {
      const factor = positiveNumber(scalingFrom!, 'factor', where);
      return { theta, type: 'linear', factor, source: sourceForm };
    }
    case 'llama3': {
      const s = scalingFrom!;
      const factor = positiveNumber(s, 'factor', where);
      const lowFreqFactor = positiveNumber(s, 'low_freq_factor', where);
      const highFreqFactor = positiveNumber(s, 'high_freq_factor', where);
      const originalMaxPositionEmbeddings = positiveInt(s, 'original_max_position_embeddings', where);
      if (highFreqFactor <= lowFreqFactor) throw new InputError(`${where}: high_freq_factor ${highFreqFactor} must exceed low_freq_factor ${lowFreqFactor}`, 'BAD_CONFIG');
      return { theta, type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings, source: sourceForm };
    }
    default:
      throw new UnsupportedModelError(`${where}: rope type '${typeRaw}' is not supported (supported: default, linear, llama3)`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function positiveInt(o: Record<string, unknown>, key: string, source: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
    throw new InputError(`${source}: ${key} must be a positive integer, got ${JSON.stringify(v ?? null)}`, 'BAD_CONFIG');
  }
  return v;
}

function positiveNumber(o: Record<string, unknown>, key: string, source: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InputError(`${source}: ${key} must be a positive number, got ${JSON.stringify(v ?? null)}`, 'BAD_CONFIG');
  }
  return v;
}

function bool(o: Record<string, unknown>, key: string, fallback: boolean, source: string): boolean {
  const v = o[key];
  if (v == null) return fallback;
  if (typeof v !== 'boolean') throw new InputError(`${source}: ${key} must be true or false, got ${JSON.stringify(v)}`, 'BAD_CONFIG');
  return v;
}

/** A token id or a list of them under `key` (absent or null: none); an InputError naming `source` otherwise. */
export function tokenIds(o: Record<string, unknown>, key: string, source: string): number[] {
  const v = o[key];
  if (v == null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new InputError(`${source}: ${key} must be a token id or a list of them, got ${JSON.stringify(v)}`, 'BAD_CONFIG');
  }
  return list as number[];
}

function optionalTokenId<K extends 'bosTokenId' | 'padTokenId'>(o: Record<string, unknown>, key: string, field: K, source: string): Partial<Record<K, number>> {
  const v = o[key];
  if (v == null) return {};
  if (Array.isArray(v)) {
    if (v.length === 0) return {};
    return { [field]: tokenIds(o, key, source)[0]! } as Partial<Record<K, number>>;
  }
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new InputError(`${source}: ${key} must be a token id, got ${JSON.stringify(v)}`, 'BAD_CONFIG');
  return { [field]: v } as Partial<Record<K, number>>;
}
