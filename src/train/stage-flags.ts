/**
 * The `apex finetune` command line: its flags, their mapping onto StageSettings (a flag not
 * given stays undefined, so contradictions can be named), and the training / held-out data
 * they describe. Kept here so the command itself stays a thin shell.
 */
import { Flags } from '@oclif/core';
import { UsageError } from '../errors.js';
import { parseByteSize } from '../io/byte-size.js';
import { BACKEND_ORDER } from '../model/backend.js';
import type { ApexTokenizer } from '../model/tokenizer.js';
import { BUILTIN_CORPORA, loadSequences, type SequenceSet } from './data.js';
import { APEX_SETTINGS, STAGE_METHODS, type ApexSetting, type StageMethod, type StageSettings } from './stage-options.js';
import { MAX_SEED } from '../util/rng.js';
import { COUNT_PATTERN, parseCount } from '../util/token-count.js';

function numberFlag(description: string) {
  return Flags.custom<number>({
    description,
    parse: async (text, _ctx, opts) => {
      const value = Number(text);
      if (text.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${opts.name} must be a number, got '${text}'`);
      return value;
    },
  })();
}

/** Token counts as people write them: 500000, 500k, 3M, 2.5B (util/token-count.ts). */
export function parseTokenCount(text: string): number {
  if (!new RegExp(COUNT_PATTERN).test(text)) throw new UsageError(`--tokens must be a count such as 500000, 500k, 3M or 2B, got '${text}'`);
  const value = parseCount(text);
  if (value === undefined) throw new UsageError(`--tokens must be at least 1, got '${text}'`);
  return value;
}

export const finetuneFlags = {
  output: Flags.string({ char: 'o', description: 'The run folder; the stage is written to <run>/stages/<n>/.', required: true }),
  stage: Flags.integer({ description: 'Stage index (1 starts from the base model, n > 1 from stages/<n-1>/model/).', default: 1, min: 1 }),
  'total-stages': Flags.integer({ description: 'Stages of the whole run, for the learning-rate plan (default: what the previous stage recorded, else --stage).', min: 1 }),
  data: Flags.string({ description: 'Training data: text files or folders, JSONL or .json of "text" or chat "messages" records (README: Data).', multiple: true, exclusive: ['input-ids', 'corpus'] }),
  'input-ids': Flags.string({ description: 'Pre-tokenized training ids (one I32/I64 [B, T] safetensors tensor, or input_ids with a right-padding attention_mask), e.g. for a model without a tokenizer.', exclusive: ['data', 'corpus'] }),
  corpus: Flags.string({ description: 'Built-in corpus used when no data is given (training defaults to the domain the bundled models have not seen).', options: [...BUILTIN_CORPORA], default: 'out-of-domain' }),
  'eval-data': Flags.string({ description: 'Held-out data (default: a seeded 5% of the training documents).', multiple: true }),
  'seq-len': Flags.integer({ description: 'Tokens per sequence.', default: 128, min: 2 }),
  samples: Flags.integer({ description: 'Train on a seeded sample of this many sequences (default: all).', min: 1 }),
  'eval-samples': Flags.integer({ description: 'Evaluate on a seeded sample of this many held-out sequences (default: all).', min: 1 }),
  method: Flags.string({ description: 'apex, or a baseline on the same trainer: vanilla (full fine-tuning) or lora.', options: [...STAGE_METHODS] }),
  setting: Flags.string({ description: 'APEX setting: operators (M, a, b only), structured (plus selected rows/columns; default), full (everything).', options: [...APEX_SETTINGS] }),
  'tuned-attn-ratio': numberFlag('structured: fraction of head units tuned directly (N ∪ P ∪ E; default 0.5625).'),
  'tuned-ffn-ratio': numberFlag('structured: fraction of FFN channels tuned directly (default 0.465).'),
  'train-embeddings': Flags.boolean({ description: 'structured: also train the embeddings and lm_head (default on; --no-train-embeddings).', allowNo: true }),
  'lora-rank': Flags.integer({ description: 'LoRA rank on all seven projections (default 8; at most the smallest side of a projection, e.g. the KV width under GQA).', min: 1 }),
  'lora-alpha': numberFlag('LoRA alpha (default 2 × rank).'),
  'match-params': Flags.string({ description: 'LoRA: pick the rank whose trainable count is closest to this APEX run\'s (run or stage folder; the smaller rank on a tie; capped like --lora-rank, with a warning when that leaves the count short).' }),
  ratio: numberFlag('Selection ratio: k = floor(n · ratio / 2^s) units per side and layer (default 0.375).'),
  'decay-k': Flags.boolean({ description: 'Decaying K: s = stage index; units used as N earlier are excluded from P and N (structured: they stay directly tuned).' }),
  score: Flags.string({ description: 'rank: Top-k/Min-k counts (the method); avg: the units\' norms summed over the data (the ablation; stored as averages, which rank the same).', options: ['rank', 'avg'] }),
  'random-selection': Flags.boolean({ description: 'Ablation: seeded shuffle of the scores before selecting.' }),
  reverse: Flags.boolean({ description: 'Ablation: swap P and N.' }),
  lr: numberFlag('Peak learning rate of the run\'s plan (default: what the previous stage recorded, else 2e-5; docs/method.md §5).'),
  betas: Flags.string({ description: 'AdamW β1,β2 (default 0.9,0.95).' }),
  'weight-decay': numberFlag('Decoupled weight decay on matrices (default 0).'),
  'grad-clip': numberFlag('Global gradient-norm clipping threshold, 0 = off (default 1).'),
  'batch-size': Flags.integer({ description: 'Sequences per micro-batch (default 8).', min: 1 }),
  'grad-accum': Flags.integer({ description: 'Micro-batches per optimizer step (default 1); weighted by their loss targets, so B × k equals one batch of k·B also for chat data. With APEX or LoRA the weight transforms are computed once per step, not per micro-batch.', min: 1 }),
  steps: Flags.integer({ description: 'Optimizer steps of this stage (this or --tokens is required).', min: 1 }),
  tokens: Flags.string({ description: 'Token budget of this stage instead of --steps (e.g. 3M): sequence positions, padding of chat sequences included; rounded up to whole steps (said when it is not one).' }),
  'eval-every': Flags.integer({ description: 'Held-out evaluation every N steps, and always before the first and after the last step (default 0: only those two).', min: 0 }),
  'eval-batch-size': Flags.integer({ description: 'Sequences per batch of the held-out evaluations (default: --batch-size); changes speed and memory, not the perplexity.', min: 1 }),
  'recompute-activations': Flags.boolean({ description: 'Recompute each decoder layer\'s activations in the backward pass instead of keeping them (activation checkpointing): training memory for activations falls to the layer inputs plus one layer\'s, at the cost of one more forward of the layers per micro-batch (about +30% step time); the same results.' }),
  'save-every': Flags.integer({ description: 'Checkpoint every N steps (default 100; 0: only at the end and on Ctrl-C).', min: 0 }),
  'keep-checkpoints': Flags.integer({ description: 'Checkpoints kept (default 2).', min: 1 }),
  resume: Flags.boolean({ description: 'Continue an interrupted stage from its last checkpoint, or reuse a complete one (with the same options: a checkpoint or complete stage made with other settings is refused; with neither there, a warning says the stage starts from step 0).' }),
  force: Flags.boolean({ description: 'Train the stage again from scratch: what its folder holds is deleted first (a retraining that fails leaves no stage behind).' }),
  seed: Flags.integer({ description: 'Seed of operator/adapter initialisation, data order and sampling (default 0).', min: 0, max: MAX_SEED }),
  backend: Flags.string({ description: 'TensorFlow.js backend.', options: ['auto', ...BACKEND_ORDER] }),
  'max-memory': Flags.string({ description: 'Refuse to start when the training memory estimate exceeds this (e.g. 8GiB); also bounds the stage-1 analysis.' }),
  'calibration-samples': Flags.integer({ description: 'Stage 1 without scores: training sequences (a seeded sample) the analysis reads first (default 64, as apex analyze --samples).', min: 1 }),
  expand: Flags.boolean({ description: 'Fuse the stage into stages/<n>/model/ at the end (--no-expand to skip).', allowNo: true, default: true }),
  'dry-run': Flags.boolean({ description: 'Check everything up to the first training step (model, data, options, what -o holds) and print the plan: steps and tokens, trainable parameters, the memory estimate by part (and that of the analysis stage 1 runs first when it has no scores); write nothing. Exit 5 when either cannot fit --max-memory or the wasm heap. Of a Hub model not in the cache only the config and tokenizer files are downloaded; its weight files are not: their safetensors headers are read over HTTP, and the plan says how much the run would download.', default: false }),
};

function betas(text: string | undefined): { beta1?: number; beta2?: number } {
  if (text === undefined) return {};
  const parts = text.split(',').map((p) => Number(p.trim()));
  if (parts.length !== 2 || parts.some((p) => !Number.isFinite(p))) throw new UsageError(`--betas must be two numbers such as 0.9,0.95, got '${text}'`);
  return { beta1: parts[0]!, beta2: parts[1]! };
}

/** Flag values (as oclif parsed them) → stage settings; a flag not given stays undefined. */
export function stageSettingsFromFlags(model: string, f: Record<string, unknown>, argv: readonly string[]): StageSettings {
  const num = (k: string) => f[k] as number | undefined;
  const bool = (k: string) => f[k] as boolean | undefined;
  return {
    model,
    run: f.output as string,
    stage: f.stage as number,
    totalStages: num('total-stages'),
    method: f.method as StageMethod | undefined,
    setting: f.setting as ApexSetting | undefined,
    ratio: num('ratio'),
    decayK: bool('decay-k'),
    score: f.score as StageSettings['score'],
    randomSelection: bool('random-selection'),
    reverse: bool('reverse'),
    tunedAttnRatio: num('tuned-attn-ratio'),
    tunedFfnRatio: num('tuned-ffn-ratio'),
    trainEmbeddings: bool('train-embeddings'),
    loraRank: num('lora-rank'),
    loraAlpha: num('lora-alpha'),
    matchParams: f['match-params'] as string | undefined,
    lr: num('lr'),
    ...betas(f.betas as string | undefined),
    weightDecay: num('weight-decay'),
    gradClip: num('grad-clip'),
    batchSize: num('batch-size'),
    gradAccum: num('grad-accum'),
    steps: num('steps'),
    tokens: f.tokens !== undefined ? parseTokenCount(f.tokens as string) : undefined,
    evalEvery: num('eval-every'),
    evalBatchSize: num('eval-batch-size'),
    recomputeActivations: bool('recompute-activations'),
    saveEvery: num('save-every'),
    keepCheckpoints: num('keep-checkpoints'),
    seed: num('seed'),
    resume: bool('resume'),
    force: bool('force'),
    backend: f.backend as string | undefined,
    maxMemoryBytes: f['max-memory'] !== undefined ? parseByteSize(f['max-memory'] as string, '--max-memory') : undefined,
    expand: bool('expand'),
    dryRun: bool('dry-run'),
    calibrationSamples: num('calibration-samples'),
    argv,
  };
}

/**
 * Training and held-out sequences: `--eval-data` when given (all of it), else the seeded
 * held-out split of the training data (the training set is then the rest).
 */
export async function loadStageData(
  f: Record<string, unknown>,
  tokenizer: ApexTokenizer | undefined,
  onWarning?: (message: string) => void,
  signal?: AbortSignal,
  onProgress?: (message: string) => void,
): Promise<{ train: SequenceSet; eval: SequenceSet }> {
  const seqLen = f['seq-len'] as number;
  const seed = (f.seed as number | undefined) ?? 0;
  const source = f.data ? { data: f.data as string[] } : f['input-ids'] ? { inputIds: f['input-ids'] as string } : { builtin: f.corpus as string };
  const common = { ...(tokenizer ? { tokenizer } : {}), seqLen, seed, ...(onWarning ? { onWarning } : {}), ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) };
  const samples = (k: string) => (f[k] !== undefined ? { samples: f[k] as number, samplesName: `--${k}` } : {});
  const evalData = f['eval-data'] as string[] | undefined;
  const train = await loadSequences({ ...source, ...common, ...samples('samples'), split: evalData ? 'all' : 'train' });
  const held = await loadSequences({ ...(evalData ? { data: evalData } : source), ...common, ...samples('eval-samples'), split: evalData ? 'all' : 'heldout' });
  return { train, eval: held };
}
