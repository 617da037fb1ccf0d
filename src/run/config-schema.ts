/**
 * The one description of an `apex run` config file. Validation (schema-check.ts), the
 * published JSON Schema and the key reference in docs/config.md (schema-export.ts) are all
 * derived from this tree, and a type-level check below keeps `ResolvedConfig` in step with it.
 */

import { MAX_SEED } from '../util/rng.js';
import { FIRST_WARMUP_FRACTION, STAGE_WARMUP_FRACTION } from '../train/lr-schedule.js';

interface NodeBase {
  readonly description: string;
  /** `null` is an accepted value. */
  readonly nullable?: boolean;
  /** The key has no default: a config file must set it. */
  readonly required?: boolean;
  /** How the default reads in the docs when it is computed from other keys. */
  readonly defaultText?: string;
}

export interface IntegerNode extends NodeBase {
  readonly kind: 'integer';
  readonly minimum?: number;
  readonly maximum?: number;
  readonly default?: number | null;
}

export interface NumberNode extends NodeBase {
  readonly kind: 'number';
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
  readonly exclusiveMaximum?: number;
  /** The only value accepted, and why (a value the method fixes but a config may still spell out). */
  readonly fixed?: { readonly value: number; readonly why: string };
  readonly default?: number | null;
}

export interface BooleanNode extends NodeBase {
  readonly kind: 'boolean';
  readonly default?: boolean;
}

export interface EnumNode extends NodeBase {
  readonly kind: 'enum';
  readonly values: readonly string[];
  readonly default?: string | null;
}

/** A filesystem path (resolved against the config file's folder) or, for `model`, also a Hub id. */
export interface PathNode extends NodeBase {
  readonly kind: 'path';
  readonly role: 'folder' | 'file' | 'model';
  readonly default?: string | null;
}

/** One or more data files (text or chat JSONL), each a path or `builtin:NAME`; a single string is a list of one. */
export interface SourcesNode extends NodeBase {
  readonly kind: 'sources';
  readonly default?: null;
}

/** A byte count written as `8GiB`, `512MB` or a plain integer of bytes; resolved to bytes. */
export interface ByteSizeNode extends NodeBase {
  readonly kind: 'bytes';
  readonly default?: null;
}

/** A positive count written as an integer or as text with a decimal suffix: 500000, 500k, 3M, 2B. */
export interface CountNode extends NodeBase {
  readonly kind: 'count';
  readonly default?: null;
}

/** A fixed-length list of numbers, e.g. Adam's betas. */
export interface TupleNode extends NodeBase {
  readonly kind: 'tuple';
  readonly items: readonly NumberNode[];
  readonly default?: readonly number[];
}

export interface ObjectNode extends NodeBase {
  readonly kind: 'object';
  readonly properties: { readonly [key: string]: SchemaNode };
  /** Keys of which one must be written (the rules check it: config-rules.ts); the section is then required. */
  readonly requiredOneOf?: readonly string[];
}

export type LeafNode = IntegerNode | NumberNode | BooleanNode | EnumNode | PathNode | SourcesNode | ByteSizeNode | CountNode | TupleNode;
export type SchemaNode = LeafNode | ObjectNode;

export const RUN_METHODS = ['apex', 'vanilla', 'lora'] as const;
export const APEX_SETTINGS = ['operators', 'structured', 'full'] as const;
export const BACKENDS = ['auto', 'webgpu', 'tensorflow', 'wasm', 'cpu'] as const;
export const SCORE_MODES = ['rank', 'avg'] as const;
export type RunMethod = (typeof RUN_METHODS)[number];
export type ApexSetting = (typeof APEX_SETTINGS)[number];
export type BackendChoice = (typeof BACKENDS)[number];
export type ScoreMode = (typeof SCORE_MODES)[number];

/** Prefix of a data source that names a corpus bundled with apex instead of a file. */
export const BUILTIN_PREFIX = 'builtin:';

const unitRatio = { kind: 'number', exclusiveMinimum: 0, maximum: 1 } as const;
const fraction = { kind: 'number', minimum: 0, exclusiveMaximum: 1 } as const;
const FIXED_BY_METHOD = "the trainer's learning-rate plan, docs/method.md §5";

export const CONFIG_SCHEMA = {
  kind: 'object',
  description: 'Configuration of `apex run`: one multi-stage APEX (or baseline) training run.',
  properties: {
    model: {
      kind: 'path',
      role: 'model',
      required: true,
      description:
        'The checkpoint to train: a local Hugging Face model folder, or a Hub id `org/name` with an optional `@revision`. ' +
        'A value that exists as a folder, or starts with `./`, `../`, `/` or `~`, is a local path.',
    },
    output: { kind: 'path', role: 'folder', default: './apex-run', description: 'Run folder (layout: docs/method.md §7). Relative to the current directory unless set in a config file.' },
    seed: { kind: 'integer', minimum: 0, maximum: MAX_SEED, default: 0, description: 'Seed of every random choice: data order and split, operator and LoRA initialisation, random selection.' },
    backend: { kind: 'enum', values: BACKENDS, default: 'auto', description: 'TensorFlow.js backend; `auto` tries webgpu, tensorflow, wasm, cpu in that order.' },
    max_memory: {
      kind: 'bytes',
      nullable: true,
      default: null,
      description: 'Refuse to start (exit 5) when the memory estimate exceeds this, e.g. `8GiB` or `8GB`; null: no limit.',
    },
    data: {
      kind: 'object',
      description: 'Training, evaluation and calibration data.',
      requiredOneOf: ['train', 'train_input_ids'],
      properties: {
        train: {
          kind: 'sources',
          nullable: true,
          default: null,
          defaultText: 'required unless data.train_input_ids is set',
          description: 'Training data: one file or a list (plain text, or chat JSONL with `messages`), or `builtin:NAME` for a corpus bundled with apex. Exclusive with data.train_input_ids; one of the two is required.',
        },
        train_input_ids: {
          kind: 'path',
          role: 'file',
          nullable: true,
          default: null,
          description:
            'Pre-tokenized training data instead of data.train, as `apex finetune --input-ids`: a safetensors file with one I32/I64 [B, T] tensor, or `input_ids` with a right-padding `attention_mask`; each row is one document and one sequence, cut to data.seq_len. ' +
            'A model without tokenizer files needs every data set it reads as token ids (a held-out split or calibration sample drawn from these ids is ids too).',
        },
        eval: {
          kind: 'sources',
          nullable: true,
          default: null,
          description: 'Held-out evaluation data; null (and no data.eval_input_ids): a seeded 5% of the training documents is held out (and not trained on).',
        },
        eval_input_ids: {
          kind: 'path',
          role: 'file',
          nullable: true,
          default: null,
          description: 'Pre-tokenized held-out data instead of data.eval, as `apex eval --input-ids` (the same file format as data.train_input_ids); all of it is held-out data.',
        },
        calibration: {
          kind: 'sources',
          nullable: true,
          default: null,
          description: 'Data for the initial advantage assessment (method apex); null (and no data.calibration_input_ids): a seeded sample of the training sequences.',
        },
        calibration_input_ids: {
          kind: 'path',
          role: 'file',
          nullable: true,
          default: null,
          description: 'Pre-tokenized calibration data instead of data.calibration, as `apex analyze --input-ids` (the same file format as data.train_input_ids; method apex).',
        },
        seq_len: { kind: 'integer', minimum: 2, maximum: 1048576, default: 128, description: 'Tokens per training and evaluation sequence.' },
        calibration_samples: { kind: 'integer', minimum: 1, default: 64, description: 'Sequences in the initial advantage assessment (method apex).' },
        eval_samples: { kind: 'integer', minimum: 1, nullable: true, default: null, description: 'Sequences per evaluation; null: all held-out sequences.' },
        train_samples: {
          kind: 'integer',
          minimum: 1,
          nullable: true,
          default: null,
          description: 'Train on a seeded sample of this many training sequences, as `apex finetune --samples` (the calibration sample is then drawn from it); null: all.',
        },
      },
    },
    method: { kind: 'enum', values: RUN_METHODS, default: 'apex', description: 'What is trained: `apex` (the method), `vanilla` (full fine-tuning baseline) or `lora` (LoRA baseline).' },
    setting: {
      kind: 'enum',
      values: APEX_SETTINGS,
      nullable: true,
      default: 'full',
      defaultText: '`full` with method apex, else null',
      description: 'APEX setting (docs/method.md §4): `operators` (only M, a, b), `structured` (plus the selected rows/columns), `full` (all weights). Method apex only.',
    },
    structured: {
      kind: 'object',
      nullable: true,
      defaultText: 'filled with setting structured, else null',
      description: 'Directly-tuned units of the `structured` setting; the defaults are the reference "52%" recipe. Setting structured only.',
      properties: {
        tuned_attn_ratio: { ...unitRatio, default: 0.5625, description: 'Fraction of heads tuned directly, N ∪ P ∪ E: max(|P| + |N|, floor(n · ratio)) units, so a value at or below what P and N take adds no E.' },
        tuned_ffn_ratio: { ...unitRatio, default: 0.465, description: 'Fraction of FFN channels tuned directly, N ∪ P ∪ E: max(|P| + |N|, floor(n · ratio)) units, so a value at or below what P and N take adds no E.' },
        train_embeddings: { kind: 'boolean', default: true, description: 'Also train the embeddings and lm_head.' },
      },
    },
    lora: {
      kind: 'object',
      nullable: true,
      defaultText: 'filled with method lora, else null',
      description: 'LoRA baseline on all seven projections (A Kaiming-uniform, B zero, no dropout), merged at the end of each stage. Method lora only.',
      properties: {
        rank: { kind: 'integer', minimum: 1, nullable: true, default: 8, defaultText: '8; null with match_params', description: 'LoRA rank.' },
        alpha: { kind: 'number', exclusiveMinimum: 0, nullable: true, default: null, defaultText: '2 · rank', description: 'LoRA alpha (scale alpha / rank).' },
        match_params: {
          kind: 'path',
          role: 'folder',
          nullable: true,
          default: null,
          description: 'An APEX run folder: pick the rank whose trainable-parameter count is closest to that run\'s (exclusive with rank).',
        },
      },
    },
    stages: {
      kind: 'object',
      description: 'The stages of training and the unit selection at each stage start (docs/method.md §2, §5).',
      properties: {
        count: { kind: 'integer', minimum: 1, maximum: 64, default: 2, description: 'Number of stages (the paper: returns diminish past 3).' },
        steps: {
          kind: 'integer',
          minimum: 1,
          nullable: true,
          default: 100,
          defaultText: '100; null when tokens is set',
          description: 'Optimizer steps per stage (exclusive with tokens).',
        },
        tokens: { kind: 'count', nullable: true, default: null, description: 'Training tokens per stage (exclusive with steps), e.g. 3M: sequence positions, steps × batch × grad_accum × seq_len, so chat sequences count their padding.' },
        ratio: { ...unitRatio, default: 0.375, description: 'Selection ratio: k = floor(n · ratio / 2^s) units per side (P and N) per layer. Method apex only.' },
        decay_k: { kind: 'boolean', default: false, description: 'Decaying K: s = stage index; units already used as N are excluded from later P and N (structured: they stay directly tuned). Method apex only.' },
        score: { kind: 'enum', values: SCORE_MODES, default: 'rank', description: '`rank` (Top-k/Min-k counts, the method) or `avg` (the units\' norms summed over the data, an ablation; stored as averages, which rank the same). Method apex only.' },
        random_selection: { kind: 'boolean', default: false, description: 'Ablation: seeded shuffle of the scores before selection. Method apex only.' },
        reverse: { kind: 'boolean', default: false, description: 'Ablation: swap P and N. Method apex only.' },
      },
    },
    optimizer: {
      kind: 'object',
      description: 'AdamW and the learning-rate plan (docs/method.md §5).',
      properties: {
        lr: { kind: 'number', exclusiveMinimum: 0, default: 3e-4, description: 'Peak learning rate.' },
        betas: {
          kind: 'tuple',
          items: [
            { ...fraction, description: 'β1' },
            { ...fraction, description: 'β2' },
          ],
          default: [0.9, 0.95],
          description: 'Adam betas [β1, β2], each in [0, 1).',
        },
        weight_decay: { kind: 'number', minimum: 0, default: 0, description: 'Decoupled weight decay.' },
        grad_clip: { kind: 'number', minimum: 0, nullable: true, default: 1, description: 'Clip the global gradient norm to this; 0 or null: no clipping.' },
        batch_size: { kind: 'integer', minimum: 1, default: 8, description: 'Sequences per micro-batch.' },
        grad_accum: { kind: 'integer', minimum: 1, default: 1, description: 'Micro-batches per optimizer step, weighted by their loss targets (B × k = one batch of k·B, chat data too); APEX and LoRA weight transforms are computed once per step.' },
        recompute_activations: { kind: 'boolean', default: false, description: 'Recompute each decoder layer\'s activations in the backward pass instead of keeping them (activation checkpointing, as --recompute-activations): training activations fall to the layer inputs plus one layer\'s, for about one more forward of the layers per micro-batch (about +30% step time); the same results, so it is not in the config hash and may change on an existing run folder.' },
        warmup_fraction: { kind: 'number', fixed: { value: FIRST_WARMUP_FRACTION, why: FIXED_BY_METHOD }, default: FIRST_WARMUP_FRACTION, description: 'Linear warm-up as a fraction of all stages\' steps (floored), then cosine to 0. Fixed by the method (docs/method.md §5): any other value is refused.' },
        boundary_warmup_fraction: { kind: 'number', fixed: { value: STAGE_WARMUP_FRACTION, why: FIXED_BY_METHOD }, default: STAGE_WARMUP_FRACTION, description: 'Re-warm-up at each stage boundary, as a fraction of the remaining steps (floored). Fixed by the method (docs/method.md §5): any other value is refused.' },
      },
    },
    eval: {
      kind: 'object',
      description: 'Held-out evaluation during training (always also before training and at the end of each stage).',
      properties: {
        every: { kind: 'integer', minimum: 0, nullable: true, default: 50, description: 'Evaluate every this many steps while training, and before the first and after the last step of each stage; 0: only those two (as --eval-every 0); null: not while training (each stage\'s fused model is evaluated either way).' },
        batch_size: { kind: 'integer', minimum: 1, default: 8, description: 'Sequences per batch of the held-out evaluations: of the base model and of each stage\'s fused model, and, with eval.every set, of those during training, which run at most optimizer.batch_size sequences at once (they hold the training model\'s activations, so a larger batch could need more memory than training); changes speed and memory, not the perplexity, so it is not in the config hash and may change on an existing run folder.' },
      },
    },
    checkpoint: {
      kind: 'object',
      description: 'Resumable training checkpoints inside each stage.',
      properties: {
        every: { kind: 'integer', minimum: 0, nullable: true, default: 50, description: 'Save every this many steps; 0 or null: only at stage ends. Not in the config hash (a resumed stage continues exactly): it may change on an existing run folder.' },
        keep: { kind: 'integer', minimum: 1, default: 2, description: 'Most recent checkpoints kept per stage. Not in the config hash: it may change on an existing run folder.' },
      },
    },
    baseline: {
      kind: 'object',
      description: 'Baselines trained alongside, on the same data and token budget.',
      properties: {
        vanilla: {
          kind: 'boolean',
          default: true,
          defaultText: 'true; false with method vanilla',
          description: 'Also train a vanilla (full fine-tuning) baseline with the same total budget and report its perplexity.',
        },
      },
    },
  },
} as const satisfies ObjectNode;

// ---- the resolved config: every key filled, paths absolute ----

export interface DataConfig {
  /** Absolute paths or `builtin:NAME`; exactly one of train and train_input_ids is non-null. */
  train: string[] | null;
  /** Absolute path of a safetensors file of token ids. */
  train_input_ids: string | null;
  eval: string[] | null;
  /** At most one of eval and eval_input_ids is non-null. */
  eval_input_ids: string | null;
  calibration: string[] | null;
  /** At most one of calibration and calibration_input_ids is non-null. */
  calibration_input_ids: string | null;
  seq_len: number;
  calibration_samples: number;
  eval_samples: number | null;
  train_samples: number | null;
}
export interface StructuredConfig {
  tuned_attn_ratio: number;
  tuned_ffn_ratio: number;
  train_embeddings: boolean;
}
export interface LoraConfig {
  /** null when match_params picks it. */
  rank: number | null;
  /** null only when rank is null (then 2 · the picked rank). */
  alpha: number | null;
  match_params: string | null;
}
export interface StagesConfig {
  count: number;
  /** Exactly one of steps and tokens is non-null. */
  steps: number | null;
  tokens: number | null;
  ratio: number;
  decay_k: boolean;
  score: ScoreMode;
  random_selection: boolean;
  reverse: boolean;
}
export interface OptimizerConfig {
  lr: number;
  betas: [number, number];
  weight_decay: number;
  grad_clip: number | null;
  batch_size: number;
  grad_accum: number;
  recompute_activations: boolean;
  warmup_fraction: number;
  boundary_warmup_fraction: number;
}
export interface ResolvedConfig {
  /** Absolute folder path, or a Hub id `org/name[@rev]`. */
  model: string;
  output: string;
  seed: number;
  backend: BackendChoice;
  /** Bytes. */
  max_memory: number | null;
  data: DataConfig;
  method: RunMethod;
  /** Non-null exactly when method is apex. */
  setting: ApexSetting | null;
  /** Non-null exactly when method is apex and setting structured. */
  structured: StructuredConfig | null;
  /** Non-null exactly when method is lora. */
  lora: LoraConfig | null;
  stages: StagesConfig;
  optimizer: OptimizerConfig;
  eval: { every: number | null; batch_size: number };
  checkpoint: { every: number | null; keep: number };
  baseline: { vanilla: boolean };
}

// ---- compile-time check that the schema and ResolvedConfig describe the same shape ----

type NumberTuple<T extends readonly unknown[]> = { -readonly [I in keyof T]: number };
type OrNull<N, T> = N extends { readonly nullable: true } ? T | null : T;
type InferSchema<N> = N extends ObjectNode
  ? OrNull<N, { -readonly [K in keyof N['properties']]: InferSchema<N['properties'][K]> }>
  : N extends IntegerNode | NumberNode | ByteSizeNode | CountNode
    ? OrNull<N, number>
    : N extends BooleanNode
      ? OrNull<N, boolean>
      : N extends EnumNode
        ? OrNull<N, N['values'][number]>
        : N extends PathNode
          ? OrNull<N, string>
          : N extends SourcesNode
            ? OrNull<N, string[]>
            : N extends TupleNode
              ? OrNull<N, NumberTuple<N['items']>>
              : never;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type AssertTrue<T extends true> = T;
// Fails to compile when a key, type or nullability differs between the two.
export type SchemaMatchesResolvedConfig = AssertTrue<Same<InferSchema<typeof CONFIG_SCHEMA>, ResolvedConfig>>;
