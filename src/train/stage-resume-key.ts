/**
 * What decides a stage's results besides its learning-rate plan and training data (which the
 * trainer checks itself): recorded in every checkpoint, so that `--resume` with other settings
 * is refused instead of finishing the stage as a mix of two runs recorded as one.
 *
 * Checkpoints of versions before 2026-11-27 16:04 have no key: the stage refuses to resume them
 * (stage.ts), since how a stage trains has changed since.
 */
import { createHash } from 'node:crypto';
import type { LayerSelection } from '../ops/selection.js';
import type { RecorderShape } from '../ops/rank-counts.js';
import type { ResolvedStageSettings } from './stage-options.js';

export type ResumeKeyValue = string | number | boolean | null;
/** Setting name (as a message says it) → value; digests stand for long values. */
export type ResumeKey = Readonly<Record<string, ResumeKeyValue>>;

/** The optimizer settings other than the learning rate, which the learning-rate plan covers. */
export interface ResumeKeyInputs extends Omit<ResolvedStageSettings['optimizer'], 'lr'> {
  readonly method: string;
  readonly setting: string | null;
  /** The units chosen per layer (P, N, E), which the ratio, score, decay, seed and scores decide. */
  readonly selections: readonly LayerSelection[] | undefined;
  /** The k the score recorder counts with (decaying K changes it without changing this stage's units). */
  readonly recorder: RecorderShape | undefined;
  readonly trainEmbeddings: boolean;
  readonly lora: { readonly rank: number; readonly alpha: number } | undefined;
  /** Fingerprint of the stage's input model (file names and sha256s). */
  readonly inputModel: string;
  /** sha256 (hex) of the held-out set, or null without periodic evaluation. */
  readonly heldOut: string | null;
  /**
   * The training sequences' real lengths (chat data, ids with an attention_mask): they weight
   * the recorder's counts, and the trainer's data digest (ids and loss masks) does not cover them.
   */
  readonly trainLengths: readonly number[] | undefined;
}

function digest(value: unknown): string {
  const json = JSON.stringify(value, (_key, v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Int32Array) : v));
  return `sha256:${createHash('sha256').update(json ?? 'null').digest('hex').slice(0, 16)}`;
}

export function stageResumeKey(k: ResumeKeyInputs): ResumeKey {
  return {
    method: k.method,
    setting: k.setting,
    'selected units (P, N, E of every layer, from the selection settings and the scores)': k.selections ? digest(k.selections) : null,
    'score recorder k': k.recorder ? digest(k.recorder) : null,
    'embeddings trained': k.trainEmbeddings,
    'LoRA rank': k.lora?.rank ?? null,
    'LoRA alpha': k.lora?.alpha ?? null,
    'AdamW beta1': k.beta1,
    'AdamW beta2': k.beta2,
    'weight decay': k.weightDecay,
    'gradient clipping': k.gradClip,
    'batch size': k.batchSize,
    'gradient accumulation': k.gradAccum,
    'input model': digest(k.inputModel),
    'held-out data': k.heldOut === null ? null : `sha256:${k.heldOut.slice(0, 16)}`,
    'training sequence lengths': k.trainLengths ? digest(k.trainLengths) : null,
  };
}

/**
 * For entries that are digests of something several options decide, which options to restore.
 * The held-out set is the one a changed --seed shows up in first when --eval-samples samples it
 * (finetune's held-out split itself is always drawn with seed 0: README, Data).
 */
const CAUSES: Readonly<Record<string, string>> = {
  'held-out data': 'the held-out sequences differ: were --eval-samples, --seed (which draws that sample; the held-out split is drawn with seed 0 whatever the --seed), --eval-data, --seq-len or the data changed?',
  'input model': 'another model, or its files changed?',
  'selected units (P, N, E of every layer, from the selection settings and the scores)': 'unchanged options give other units under an apex that selects differently, as random selection does since 2026-11-27 with a new permutation per stage: then --force trains the stage again',
};

/**
 * "name then, now" for every entry recorded in both that differs, with the options that
 * decide it where the entry is a digest. Entries only one side has (a checkpoint of a version
 * that recorded fewer) are not compared.
 */
export function resumeKeyChanges(saved: ResumeKey | undefined, now: ResumeKey): string[] {
  if (saved === undefined) return [];
  const show = (v: ResumeKeyValue | undefined) => JSON.stringify(v);
  return Object.keys(now)
    .filter((n) => Object.hasOwn(saved, n) && saved[n] !== now[n])
    .map((n) => `${n} ${show(saved[n])} then, ${show(now[n])} now${CAUSES[n] !== undefined ? ` (${CAUSES[n]})` : ''}`);
}
