/**
 * From an `apex run` config to the settings of each training stage (src/train/stage.ts), for
 * the run itself and for its vanilla baseline. The baseline gets the same model, data, seed,
 * optimizer, budget per stage and number of stages, so it follows the same learning-rate plan
 * over the same total steps and reads the same tokens in the same order (the trainer derives
 * each stage's data order from the run seed and the stage index); only the method differs.
 */
import type { ResolvedConfig } from '../run/config-schema.js';
import type { StageMethod, StageSettings } from '../train/stage-options.js';

/** One trained line of a run: the run's own stages, or a baseline's. */
export interface TrainingLine {
  /** Key prefix in run.json and label in messages: `run` or `baseline/vanilla`. */
  readonly key: string;
  /** Human name. */
  readonly name: string;
  readonly method: StageMethod;
  /** Folder holding this line's `stages/` (the run folder, or `<run>/baseline/vanilla`). */
  readonly folder: string;
}

/** Where a line lives, relative to the run folder. */
export const BASELINE_FOLDER = 'baseline/vanilla';

/** Settings of stage `stage` of `line`; `modelArgument` is the model as the config names it, recorded as the base model. */
export function stageSettings(config: ResolvedConfig, line: TrainingLine, stage: number, modelArgument: string): StageSettings {
  const apex = line.method === 'apex';
  const lora = line.method === 'lora' && config.lora !== null ? config.lora : null;
  const structured = apex && config.setting === 'structured' && config.structured !== null ? config.structured : null;
  return {
    model: modelArgument,
    run: line.folder,
    stage,
    totalStages: config.stages.count,
    method: line.method,
    ...(apex
      ? {
          setting: config.setting ?? 'full',
          ratio: config.stages.ratio,
          decayK: config.stages.decay_k,
          score: config.stages.score,
          randomSelection: config.stages.random_selection,
          reverse: config.stages.reverse,
        }
      : {}),
    ...(structured
      ? { tunedAttnRatio: structured.tuned_attn_ratio, tunedFfnRatio: structured.tuned_ffn_ratio, trainEmbeddings: structured.train_embeddings }
      : {}),
    ...(lora
      ? {
          ...(lora.rank !== null ? { loraRank: lora.rank } : {}),
          ...(lora.alpha !== null ? { loraAlpha: lora.alpha } : {}),
          ...(lora.match_params !== null ? { matchParams: lora.match_params } : {}),
        }
      : {}),
    lr: config.optimizer.lr,
    beta1: config.optimizer.betas[0],
    beta2: config.optimizer.betas[1],
    weightDecay: config.optimizer.weight_decay,
    gradClip: config.optimizer.grad_clip ?? 0,
    batchSize: config.optimizer.batch_size,
    gradAccum: config.optimizer.grad_accum,
    ...(config.stages.steps !== null ? { steps: config.stages.steps } : { tokens: config.stages.tokens ?? 1 }),
    evalEvery: config.eval.every ?? 0,
    // At most the training micro-batch: the evaluations between steps run on the training model,
    // whose activations per sequence are most of training's, and a config that lowered
    // optimizer.batch_size for memory (examples/instruction-structured.yaml: 1) must not evaluate 8.
    evalBatchSize: Math.min(config.eval.batch_size, config.optimizer.batch_size),
    recomputeActivations: config.optimizer.recompute_activations,
    saveEvery: config.checkpoint.every ?? 0,
    keepCheckpoints: config.checkpoint.keep,
    seed: config.seed,
    backend: config.backend,
    ...(config.max_memory !== null ? { maxMemoryBytes: config.max_memory } : {}),
    expand: true,
    analysisBatchSize: config.optimizer.batch_size,
    command: 'run',
  };
}
