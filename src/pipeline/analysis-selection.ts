/**
 * From an analysis's rank-count recorder to the selection a person reads in the report: the
 * counting k of every layer (the selection size of §2, which is also the k of the Top-k / Min-k
 * counts), the score records written to stats.safetensors, and P/N per layer chosen by the
 * same `selectModel` that `apex finetune` uses, with the same ablation switches.
 */
import { UsageError } from '../errors.js';
import { RankCountRecorder } from '../ops/rank-counts.js';
import { scoreRecordsFromRecorder, selectionInputs, type LayerScoreRecord } from '../ops/score-file.js';
import { DEFAULT_RATIO, selectionExponent, selectionSize, selectModel, type LayerSelection, type ScoreMode } from '../ops/selection.js';
import type { ModelSpec } from '../model/model-spec.js';

export interface SelectionSettings {
  /** k = floor(n · ratio / 2^s); default 0.375. */
  readonly ratio: number;
  readonly score: ScoreMode;
  /** Stage index (1-based); only changes k with decayK. */
  readonly stage: number;
  readonly decayK: boolean;
  /** Ablation: seeded shuffle of the scores (seeded with `seed`). */
  readonly randomSelection: boolean;
  /** Ablation: swap P and N. */
  readonly reverse: boolean;
  readonly seed: number;
}

export const DEFAULT_SELECTION: Omit<SelectionSettings, 'seed'> = {
  ratio: DEFAULT_RATIO,
  score: 'rank',
  stage: 1,
  decayK: false,
  randomSelection: false,
  reverse: false,
};

/** Checks the settings a user can get wrong (UsageError, exit 2). */
export function checkSelectionSettings(s: SelectionSettings): void {
  if (!Number.isFinite(s.ratio) || s.ratio <= 0 || s.ratio > 1) throw new UsageError(`--ratio must be in (0, 1], got ${s.ratio}`);
  if (s.score !== 'rank' && s.score !== 'avg') throw new UsageError(`--score must be rank or avg, got ${String(s.score)}`);
  selectionExponent(s.stage, s.decayK);
  if (s.stage !== 1 && !s.decayK) throw new UsageError('--stage only changes the selection with --decay-k; pass both or neither');
  if (!Number.isSafeInteger(s.seed)) throw new UsageError(`--seed must be an integer, got ${s.seed}`);
}

/** k of the head units (KV groups under GQA) and of the channels, the same for every layer. */
export function countingK(spec: ModelSpec, s: SelectionSettings): { headK: number; channelK: number } {
  const exponent = selectionExponent(s.stage, s.decayK);
  return { headK: selectionSize(spec.numKvHeads, s.ratio, exponent), channelK: selectionSize(spec.intermediateSize, s.ratio, exponent) };
}

/** A recorder sized for the model, counting with the selection size of the settings. */
export function analysisRecorder(spec: ModelSpec, s: SelectionSettings): RankCountRecorder {
  return new RankCountRecorder({ numLayers: spec.numLayers, numHeads: spec.numHeads, numKvHeads: spec.numKvHeads, intermediateSize: spec.intermediateSize, ...countingK(spec, s) });
}

/** Score records (what stats.safetensors holds) and the per-layer selection they give. */
export function selectFromRecorder(recorder: RankCountRecorder, s: SelectionSettings): { records: LayerScoreRecord[]; selections: LayerSelection[] } {
  const records = scoreRecordsFromRecorder(recorder);
  const selections = selectModel(selectionInputs(records), {
    ratio: s.ratio,
    stage: s.stage,
    decayK: s.decayK,
    score: s.score,
    reverse: s.reverse,
    ...(s.randomSelection ? { randomSeed: s.seed } : {}),
  });
  return { records, selections };
}
