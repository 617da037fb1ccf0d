import type { ModelSpec } from '../../src/model/model-spec.js';
import type { LayerSelection } from '../../src/ops/selection.js';

/** The shape of fixtures/stories260K: 5 layers, hidden 64, 8 query heads in 4 KV groups of dim 8, I = 172, tied. */
export const stories260K: ModelSpec = {
  architecture: 'LlamaForCausalLM',
  numLayers: 5,
  hiddenSize: 64,
  numHeads: 8,
  numKvHeads: 4,
  headDim: 8,
  intermediateSize: 172,
  vocabSize: 512,
  tieWordEmbeddings: true,
  rmsNormEps: 1e-5,
  rope: { theta: 10000, type: 'default', source: 'rope_theta' },
  qkvBias: false,
  oBias: false,
  mlpBias: false,
  maxPositionEmbeddings: 512,
  eosTokenIds: [2],
};

/** A LLaMA-2-7B-shaped spec (32 layers, 4096 hidden, 32 MHA heads, I = 11008, untied). */
export const llama2_7b: ModelSpec = {
  ...stories260K,
  numLayers: 32,
  hiddenSize: 4096,
  numHeads: 32,
  numKvHeads: 32,
  headDim: 128,
  intermediateSize: 11008,
  vocabSize: 32000,
  tieWordEmbeddings: false,
};

export function selection(layer: number, heads: [number[], number[], number[]], channels: [number[], number[], number[]]): LayerSelection {
  const sel = ([P, N, E]: [number[], number[], number[]]) => ({ P: Int32Array.from(P), N: Int32Array.from(N), E: Int32Array.from(E) });
  return { layer, headK: heads[0].length, channelK: channels[0].length, heads: sel(heads), channels: sel(channels) };
}
