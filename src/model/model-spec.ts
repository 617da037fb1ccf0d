/**
 * The resolved description of a model that every part of apex computes with, parsed from
 * config.json by `parseModelConfig` (src/model/config.ts). Plain data, no tensors.
 */

export type SupportedArchitecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM';

export interface RopeSpec {
  readonly theta: number;
  readonly type: 'default' | 'linear' | 'llama3';
  /** linear and llama3 */
  readonly factor?: number;
  /** llama3 */
  readonly lowFreqFactor?: number;
  readonly highFreqFactor?: number;
  readonly originalMaxPositionEmbeddings?: number;
  /** Which config form it was written in (for `apex inspect`). */
  readonly source: 'rope_theta' | 'rope_parameters' | 'default';
}

export interface ModelSpec {
  readonly architecture: SupportedArchitecture;
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  readonly tieWordEmbeddings: boolean;
  readonly rmsNormEps: number;
  readonly rope: RopeSpec;
  /** Biases on q/k/v (Qwen2 always; LLaMA with attention_bias). */
  readonly qkvBias: boolean;
  /** Bias on o_proj (LLaMA attention_bias). */
  readonly oBias: boolean;
  /** Biases on gate/up/down (LLaMA mlp_bias). */
  readonly mlpBias: boolean;
  /** Sliding-window size when the architecture uses one; sequences longer than it are refused. */
  readonly slidingWindow?: number;
  readonly maxPositionEmbeddings: number;
  readonly bosTokenId?: number;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId?: number;
}
