/**
 * apex as a library: the same functions the commands call, for use without the CLI.
 * Each returns a plain result object and throws the typed errors of ./errors.js.
 */
export * from './errors.js';
export { runPipeline, type RunPipelineOptions } from './pipeline/run.js';
export { runAnalysis, type AnalysisOptions, type AnalysisResult } from './pipeline/analyze.js';
export { runExpand, type ExpandOptions, type ExpandResult } from './pipeline/expand.js';
export { runStage, type StageOptions, type StageResult } from './train/stage.js';
export { resolveConfig } from './run/config.js';
export { formatResolvedConfig, configHash } from './run/config-format.js';
export { evaluateNll, computeLogits, type NllOptions, type NllResult } from './model/streaming-forward.js';
export { generate, type GenerateOptions, type GenerateResult } from './model/generate.js';
export { openModelForCompute, type OpenedModel } from './model/open-model.js';
export { selectBackend, probeBackends, type BackendName, type BackendRequest } from './model/backend.js';
export { parseModelConfig } from './model/config.js';
export type { ModelSpec, RopeSpec } from './model/model-spec.js';
export type { LayerHooks, LayerObserver, LayerActivations, ProjectionKey } from './model/layer-hooks.js';
export { loadTokenizer, type ApexTokenizer } from './model/tokenizer.js';
export { loadSequences, type SequenceSet, type DataSpecRecord } from './train/data.js';
export { resolveModel, type ResolveOptions, type ResolvedModel } from './io/resolve-model.js';
export { inspectCheckpoint, type InspectResult } from './io/inspect.js';
export { Checkpoint } from './io/checkpoint.js';
export { SafetensorsFile, type TensorInfo } from './io/safetensors-reader.js';
export { writeSafetensors, f32Tensor, i32Tensor, type TensorToWrite } from './io/safetensors-writer.js';
export { selectModel, selectUnits, selectionSize } from './ops/selection.js';
export { RankCountRecorder } from './ops/rank-counts.js';
export { monarchBlocks, monarchApply, monarchDense } from './ops/monarch.js';
export { readOperatorFile, writeOperatorFile } from './ops/operator-file.js';
export { effectiveRank } from './ops/effective-rank.js';
