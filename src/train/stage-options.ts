/**
 * What one training stage is asked to do (issue 6; APEX-METHOD §4, §5), the defaults, and the
 * checks that reject contradictory requests before anything is read or written.
 *
 * Options mirror the `apex finetune` flags; a field left undefined means "not given", so a
 * contradiction (a `--setting` for a baseline, LoRA flags for APEX, both `--steps` and
 * `--tokens`, …) can be told apart from a default. Error messages name the flags.
 *
 * Defaults: the reference recipe where it has one (AdamW β = 0.9/0.95, no weight decay,
 * lr 2e-5, the 52% `structured` totals 56.25% of heads / 46.5% of channels with embeddings and
 * lm_head, ratio 0.375); gradient clipping at 1.0 and batch 8 as the Hugging Face Trainer
 * defaults **(ours: the paper does not state them)**.
 */
import { UsageError } from '../errors.js';
import { DEFAULT_RATIO, type ScoreMode } from '../ops/selection.js';
import { MAX_SEED } from '../util/rng.js';

export type StageMethod = 'apex' | 'vanilla' | 'lora';
export type ApexSetting = 'operators' | 'structured' | 'full';
export const STAGE_METHODS: readonly StageMethod[] = ['apex', 'vanilla', 'lora'];
export const APEX_SETTINGS: readonly ApexSetting[] = ['operators', 'structured', 'full'];

/** The reference "52%" recipe's directly-tuned totals (§4). */
export const STRUCTURED_DEFAULTS = { tunedAttnRatio: 0.5625, tunedFfnRatio: 0.465, trainEmbeddings: true } as const;

export const TRAINING_DEFAULTS = {
  lr: 2e-5,
  beta1: 0.9,
  beta2: 0.95,
  weightDecay: 0,
  gradClip: 1,
  batchSize: 8,
  gradAccum: 1,
  evalEvery: 0,
  saveEvery: 100,
  keepCheckpoints: 2,
  seed: 0,
} as const;

/** Everything about a stage except the data and the run-time callbacks (plain data). */
export interface StageSettings {
  /** The base model folder: the input of stage 1, recorded as the run's base in every stage. */
  readonly model: string;
  /** The run folder (§7). */
  readonly run: string;
  /** 1-based. */
  readonly stage: number;
  /** Stages of the whole run, for the learning-rate plan; default: the previous stage's record, else `stage`. */
  readonly totalStages?: number;
  readonly method?: StageMethod;
  readonly setting?: ApexSetting;
  // selection (APEX only)
  readonly ratio?: number;
  readonly decayK?: boolean;
  readonly score?: ScoreMode;
  readonly randomSelection?: boolean;
  readonly reverse?: boolean;
  // structured only
  readonly tunedAttnRatio?: number;
  readonly tunedFfnRatio?: number;
  readonly trainEmbeddings?: boolean;
  // LoRA only
  readonly loraRank?: number;
  readonly loraAlpha?: number;
  /** An APEX run (or stage) folder whose recorded trainable count the LoRA rank should match. */
  readonly matchParams?: string;
  // optimizer
  readonly lr?: number;
  readonly beta1?: number;
  readonly beta2?: number;
  readonly weightDecay?: number;
  /** Global-norm clipping threshold; 0 turns clipping off. */
  readonly gradClip?: number;
  readonly batchSize?: number;
  readonly gradAccum?: number;
  /** Sequences per batch of the held-out evaluations during training (default: batchSize); not part of what a resume must match. */
  readonly evalBatchSize?: number;
  /** Recompute each decoder layer's activations in the backward pass (default false): speed and memory, not results; not part of what a resume must match. */
  readonly recomputeActivations?: boolean;
  // budget: exactly one
  readonly steps?: number;
  readonly tokens?: number;
  // bookkeeping
  readonly evalEvery?: number;
  readonly saveEvery?: number;
  readonly keepCheckpoints?: number;
  readonly seed?: number;
  readonly resume?: boolean;
  readonly force?: boolean;
  readonly backend?: string;
  readonly maxMemoryBytes?: number;
  /** Fuse into `stages/<n>/model/` at the end (default true). */
  readonly expand?: boolean;
  /** Check everything up to the first training step and return the plan; write nothing (default false). */
  readonly dryRun?: boolean;
  /** Micro-batch size of the analysis run when stage 1 finds no scores (default: batchSize). */
  readonly analysisBatchSize?: number;
  /** Training sequences (a seeded sample) that analysis reads (default 64, as `apex analyze --samples` and apex run's data.calibration_samples). */
  readonly calibrationSamples?: number;
  /** The command line, for provenance. */
  readonly argv?: readonly string[];
  /** The command recorded in apex_run.json (default `finetune`; `run` for the stages of apex run). */
  readonly command?: string;
}

/** Settings with every default applied and every combination checked. */
export interface ResolvedStageSettings {
  readonly model: string;
  readonly run: string;
  readonly stage: number;
  readonly totalStages: number | undefined;
  readonly method: StageMethod;
  readonly setting: ApexSetting | undefined;
  readonly selection: {
    readonly ratio: number;
    readonly decayK: boolean;
    readonly score: ScoreMode;
    readonly randomSelection: boolean;
    readonly reverse: boolean;
    /** Only for `structured`. */
    readonly tunedAttnRatio?: number;
    readonly tunedFfnRatio?: number;
    readonly trainEmbeddings: boolean;
  };
  readonly lora: { readonly rank?: number; readonly alpha?: number; readonly matchParams?: string } | undefined;
  readonly optimizer: {
    readonly lr: number;
    readonly beta1: number;
    readonly beta2: number;
    readonly weightDecay: number;
    readonly gradClip: number;
    readonly batchSize: number;
    readonly gradAccum: number;
  };
  readonly budget: { readonly steps: number } | { readonly tokens: number };
  readonly evalEvery: number;
  /** Held-out evaluation batch: speed and memory, not results (outside `optimizer`, so not in the resume key). */
  readonly evalBatchSize: number;
  /** Activation recomputation: speed and memory, not results (outside `optimizer`, so not in the resume key). */
  readonly recomputeActivations: boolean;
  readonly saveEvery: number;
  readonly keepCheckpoints: number;
  readonly seed: number;
  readonly resume: boolean;
  readonly force: boolean;
  readonly backend: string;
  readonly maxMemoryBytes: number | undefined;
  readonly expand: boolean;
  readonly dryRun: boolean;
  readonly analysisBatchSize: number | undefined;
  readonly calibrationSamples: number;
  readonly argv: readonly string[];
  readonly command: string;
}

/** Sequences of the stage-1 analysis, as `apex analyze --samples` and apex run's data.calibration_samples. */
export const DEFAULT_CALIBRATION_SAMPLES = 64;

const SELECTION_FLAGS = [
  ['ratio', '--ratio'],
  ['calibrationSamples', '--calibration-samples'],
  ['decayK', '--decay-k'],
  ['score', '--score'],
  ['randomSelection', '--random-selection'],
  ['reverse', '--reverse'],
] as const;
const STRUCTURED_FLAGS = [
  ['tunedAttnRatio', '--tuned-attn-ratio'],
  ['tunedFfnRatio', '--tuned-ffn-ratio'],
  ['trainEmbeddings', '--train-embeddings'],
] as const;
const LORA_FLAGS = [
  ['loraRank', '--lora-rank'],
  ['loraAlpha', '--lora-alpha'],
  ['matchParams', '--match-params'],
] as const;

/**
 * The flags of `flags` that were given. A switch set to false is its default and asks for
 * nothing, except `--no-train-embeddings`, which asks for something only `structured` can do.
 */
function given(s: StageSettings, flags: readonly (readonly [keyof StageSettings, string])[]): string[] {
  return flags
    .filter(([key]) => s[key] !== undefined && (s[key] !== false || key === 'trainEmbeddings'))
    .map(([key, flag]) => (key === 'trainEmbeddings' && s[key] === false ? '--no-train-embeddings' : flag));
}

function positiveInteger(value: number | undefined, flag: string): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) throw new UsageError(`${flag} must be an integer >= 1, got ${value}`);
}

function nonNegativeInteger(value: number | undefined, flag: string): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) throw new UsageError(`${flag} must be an integer >= 0, got ${value}`);
}

function inRange(value: number | undefined, flag: string, low: number, high: number, open: { low?: boolean; high?: boolean } = {}): void {
  if (value === undefined) return;
  if (!Number.isFinite(value) || (open.high ? value >= high : value > high) || (open.low ? value <= low : value < low)) {
    throw new UsageError(`${flag} must be in ${open.low ? '(' : '['}${low}, ${high}${open.high ? ')' : ']'}, got ${value}`);
  }
}

/** Checks every combination and range, then applies the defaults. Pure: reads no files. */
export function resolveStageSettings(s: StageSettings): ResolvedStageSettings {
  const method = s.method ?? 'apex';
  if (!STAGE_METHODS.includes(method)) throw new UsageError(`--method must be one of ${STAGE_METHODS.join(', ')}, got '${method}'`);
  if (s.setting !== undefined && !APEX_SETTINGS.includes(s.setting)) throw new UsageError(`--setting must be one of ${APEX_SETTINGS.join(', ')}, got '${s.setting}'`);
  if (method !== 'apex') {
    const wrong = [...(s.setting !== undefined ? ['--setting'] : []), ...given(s, SELECTION_FLAGS), ...given(s, STRUCTURED_FLAGS)];
    if (wrong.length > 0) throw new UsageError(`${wrong.join(', ')} ${wrong.length > 1 ? 'apply' : 'applies'} only to --method apex, not --method ${method}`);
  }
  const setting = method === 'apex' ? (s.setting ?? 'structured') : undefined;
  if (method === 'apex' && setting !== 'structured') {
    const wrong = given(s, STRUCTURED_FLAGS);
    if (wrong.length > 0) throw new UsageError(`${wrong.join(', ')} ${wrong.length > 1 ? 'apply' : 'applies'} only to --setting structured, not --setting ${setting}`);
  }
  if (method !== 'lora') {
    const wrong = given(s, LORA_FLAGS);
    if (wrong.length > 0) throw new UsageError(`${wrong.join(', ')} ${wrong.length > 1 ? 'apply' : 'applies'} only to --method lora, not --method ${method}`);
  }
  if (s.loraRank !== undefined && s.matchParams !== undefined) throw new UsageError('give either --lora-rank or --match-params, not both');
  if (s.steps !== undefined && s.tokens !== undefined) throw new UsageError('give either --steps or --tokens, not both');
  if (s.steps === undefined && s.tokens === undefined) throw new UsageError('give the budget of the stage with --steps or --tokens');
  if (s.resume && s.force) throw new UsageError('--resume and --force contradict each other (continue the run, or start the stage over)');

  positiveInteger(s.stage, '--stage');
  positiveInteger(s.totalStages, '--total-stages');
  if (s.totalStages !== undefined && s.totalStages < s.stage) throw new UsageError(`--total-stages ${s.totalStages} is less than --stage ${s.stage}`);
  positiveInteger(s.steps, '--steps');
  positiveInteger(s.tokens, '--tokens');
  positiveInteger(s.batchSize, '--batch-size');
  positiveInteger(s.gradAccum, '--grad-accum');
  positiveInteger(s.evalBatchSize, '--eval-batch-size');
  positiveInteger(s.loraRank, '--lora-rank');
  positiveInteger(s.keepCheckpoints, '--keep-checkpoints');
  positiveInteger(s.analysisBatchSize, 'analysis batch size');
  positiveInteger(s.calibrationSamples, '--calibration-samples');
  nonNegativeInteger(s.evalEvery, '--eval-every');
  nonNegativeInteger(s.saveEvery, '--save-every');
  inRange(s.ratio, '--ratio', 0, 1, { low: true });
  // As apex run's structured section: (0, 1]. A total below what P and N take adds no E.
  inRange(s.tunedAttnRatio, '--tuned-attn-ratio', 0, 1, { low: true });
  inRange(s.tunedFfnRatio, '--tuned-ffn-ratio', 0, 1, { low: true });
  // β = 1 keeps no memory of new gradients and divides by 1 − β^t = 0: NaN from the first step.
  inRange(s.beta1, '--betas (β1)', 0, 1, { high: true });
  inRange(s.beta2, '--betas (β2)', 0, 1, { high: true });
  for (const [value, flag] of [[s.lr, '--lr'], [s.loraAlpha, '--lora-alpha']] as const) {
    if (value !== undefined && (!Number.isFinite(value) || value <= 0)) throw new UsageError(`${flag} must be a finite number > 0, got ${value}`);
  }
  // --grad-clip 0 turns clipping off.
  for (const [value, flag] of [[s.weightDecay, '--weight-decay'], [s.gradClip, '--grad-clip']] as const) {
    if (value !== undefined && (!Number.isFinite(value) || value < 0)) throw new UsageError(`${flag} must be a finite number >= 0, got ${value}`);
  }
  if (s.seed !== undefined && !(Number.isSafeInteger(s.seed) && s.seed >= 0 && s.seed <= MAX_SEED)) throw new UsageError(`--seed must be an integer in [0, ${MAX_SEED}], got ${s.seed}`);
  if (s.score !== undefined && s.score !== 'rank' && s.score !== 'avg') throw new UsageError(`--score must be rank or avg, got '${String(s.score)}'`);
  if (s.maxMemoryBytes !== undefined && !(s.maxMemoryBytes > 0)) throw new UsageError(`--max-memory must be > 0, got ${s.maxMemoryBytes}`);

  const structured = setting === 'structured';
  return {
    model: s.model,
    run: s.run,
    stage: s.stage,
    totalStages: s.totalStages,
    method,
    setting,
    selection: {
      ratio: s.ratio ?? DEFAULT_RATIO,
      decayK: s.decayK ?? false,
      score: s.score ?? 'rank',
      randomSelection: s.randomSelection ?? false,
      reverse: s.reverse ?? false,
      ...(structured
        ? { tunedAttnRatio: s.tunedAttnRatio ?? STRUCTURED_DEFAULTS.tunedAttnRatio, tunedFfnRatio: s.tunedFfnRatio ?? STRUCTURED_DEFAULTS.tunedFfnRatio }
        : {}),
      trainEmbeddings: structured && (s.trainEmbeddings ?? STRUCTURED_DEFAULTS.trainEmbeddings),
    },
    lora: method === 'lora' ? { rank: s.loraRank, alpha: s.loraAlpha, matchParams: s.matchParams } : undefined,
    optimizer: {
      lr: s.lr ?? TRAINING_DEFAULTS.lr,
      beta1: s.beta1 ?? TRAINING_DEFAULTS.beta1,
      beta2: s.beta2 ?? TRAINING_DEFAULTS.beta2,
      weightDecay: s.weightDecay ?? TRAINING_DEFAULTS.weightDecay,
      gradClip: s.gradClip ?? TRAINING_DEFAULTS.gradClip,
      batchSize: s.batchSize ?? TRAINING_DEFAULTS.batchSize,
      gradAccum: s.gradAccum ?? TRAINING_DEFAULTS.gradAccum,
    },
    budget: s.steps !== undefined ? { steps: s.steps } : { tokens: s.tokens as number },
    evalEvery: s.evalEvery ?? TRAINING_DEFAULTS.evalEvery,
    evalBatchSize: s.evalBatchSize ?? s.batchSize ?? TRAINING_DEFAULTS.batchSize,
    recomputeActivations: s.recomputeActivations ?? false,
    saveEvery: s.saveEvery ?? TRAINING_DEFAULTS.saveEvery,
    keepCheckpoints: s.keepCheckpoints ?? TRAINING_DEFAULTS.keepCheckpoints,
    seed: s.seed ?? TRAINING_DEFAULTS.seed,
    resume: s.resume ?? false,
    force: s.force ?? false,
    backend: s.backend ?? 'auto',
    maxMemoryBytes: s.maxMemoryBytes,
    expand: s.expand ?? true,
    dryRun: s.dryRun ?? false,
    analysisBatchSize: s.analysisBatchSize,
    calibrationSamples: s.calibrationSamples ?? DEFAULT_CALIBRATION_SAMPLES,
    argv: s.argv ?? [],
    command: s.command ?? 'finetune',
  };
}

/** Optimizer steps of a stage: `--steps`, or `--tokens` divided by the tokens of one step, rounded up. */
export function stageSteps(budget: ResolvedStageSettings['budget'], tokensPerStep: number): number {
  return 'steps' in budget ? budget.steps : Math.max(1, Math.ceil(budget.tokens / tokensPerStep));
}
