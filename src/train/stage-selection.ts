/**
 * The units a stage expands (APEX-METHOD §2, §5, §7): the scores it starts from (stage 1:
 * `analysis/stats.safetensors`; stage n > 1: `stages/<n-1>/scores.safetensors`), the units
 * earlier stages used as N (excluded under decaying K, read from their operators files), and
 * the per-layer P/N/E from the shared `selectModel` with the same switches `apex analyze` has.
 * Also the k this stage's recorder counts with: the selection size of the stage its counts
 * will select for (n + 1), so counting and choosing use one k, as in analysis.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UsageError } from '../errors.js';
import type { ModelSpec } from '../model/model-spec.js';
import { readOperatorFile } from '../ops/operator-file.js';
import type { RecorderShape } from '../ops/rank-counts.js';
import { countingKMismatch, readScoreFile, selectionInputs, type CountingK, type LayerScoreRecord } from '../ops/score-file.js';
import { selectModel, type LayerSelection } from '../ops/selection.js';
import { countingK, DEFAULT_SELECTION } from '../pipeline/analysis-selection.js';
import { OPERATORS_FILE, stageDir } from '../pipeline/expand-paths.js';
import type { ResolvedStageSettings } from './stage-options.js';

export const ANALYSIS_STATS = join('analysis', 'stats.safetensors');
export const SCORES_FILE = 'scores.safetensors';

/** The score file stage `stage` of `run` selects from. */
export function stageScoresPath(run: string, stage: number): string {
  return stage === 1 ? join(run, ANALYSIS_STATS) : join(stageDir(run, stage - 1), SCORES_FILE);
}


/** Per layer, the head units and channels used as N by stages 1 … stage − 1 (stages without operators add nothing). */
export async function earlierNegatives(run: string, stage: number, spec: ModelSpec): Promise<{ heads: Set<number>; channels: Set<number> }[]> {
  const out = Array.from({ length: spec.numLayers }, () => ({ heads: new Set<number>(), channels: new Set<number>() }));
  for (let s = 1; s < stage; s++) {
    const path = join(stageDir(run, s), OPERATORS_FILE);
    if (!existsSync(path)) continue;
    for (const layer of (await readOperatorFile(path, spec)).layers) {
      for (const u of layer.attn?.N ?? []) out[layer.layer]!.heads.add(u);
      for (const u of layer.mlp?.N ?? []) out[layer.layer]!.channels.add(u);
    }
  }
  return out;
}

/** P/N (and E for `structured`) of every layer from the stage's score file. */
export async function selectStageUnits(settings: ResolvedStageSettings, spec: ModelSpec, scoresPath: string): Promise<LayerSelection[]> {
  const { selection, stage, seed } = settings;
  const scores = await readScoreFile(scoresPath, spec);
  const mismatch = countingKMismatch(scores.metadata, stageCountingK(settings, spec));
  if (mismatch !== undefined) {
    const remedy = stage === 1
      ? `pass --force to analyse the model again with this stage's k`
      : `select with the --ratio and --decay-k stage ${stage - 1} was trained with, or train stage ${stage - 1} again with these settings (--force)`;
    throw new UsageError(`${scoresPath} ${mismatch}: ${remedy}`, 'SCORES_MISMATCH');
  }
  if (selection.score === 'avg') requireAveragedNorms(scores.layers, scoresPath, stage);
  return selectModel(selectionInputs(scores.layers), {
    ratio: selection.ratio,
    stage,
    decayK: selection.decayK,
    score: selection.score,
    reverse: selection.reverse,
    ...(selection.randomSelection ? { randomSeed: seed } : {}),
    ...(selection.tunedAttnRatio !== undefined ? { tunedAttnRatio: selection.tunedAttnRatio } : {}),
    ...(selection.tunedFfnRatio !== undefined ? { tunedFfnRatio: selection.tunedFfnRatio } : {}),
    ...(selection.decayK ? { excluded: await earlierNegatives(settings.run, stage, spec) } : {}),
  });
}

/**
 * `--score avg` selects by the averaged norms (the `norm_avg` tensors). Every score file apex
 * writes holds them, so one without them was written or edited by something else: the error
 * names the file and how to get one that has them.
 */
export function requireAveragedNorms(layers: readonly LayerScoreRecord[], scoresPath: string, stage: number): void {
  const lacking = layers.find((l) => l.headNormAvg === undefined || l.channelNormAvg === undefined);
  if (lacking === undefined) return;
  const remedy =
    stage === 1
      ? `re-create it with \`apex analyze <model> -o ${dirname(scoresPath)} --force\`, or delete the folder ${dirname(scoresPath)} so that stage 1 runs the analysis again`
      : `train stage ${stage - 1} again with --force, which records them in it`;
  throw new UsageError(
    `--score avg needs the averaged norms (the norm_avg tensors), which ${scoresPath} does not hold for layer ${lacking.layer} ` +
      `(apex writes them in every score file, so this one was made or edited elsewhere): ${remedy}; or select with --score rank`,
  );
}

/**
 * A selection with the sizes the real one will have (k, and E up to the tuned totals, with the
 * earlier stages' N units that decaying K keeps directly tuned) but no scores behind it, for
 * estimating memory before the scores exist. Which units are chosen does not change the sizes.
 */
export async function sizingSelections(settings: ResolvedStageSettings, spec: ModelSpec): Promise<LayerSelection[]> {
  const zeros = (n: number) => ({ rank: new Float32Array(n), avg: new Float32Array(n) });
  const { selection } = settings;
  return selectModel(Array.from({ length: spec.numLayers }, () => ({ heads: zeros(spec.numKvHeads), channels: zeros(spec.intermediateSize) })), {
    ratio: selection.ratio,
    stage: settings.stage,
    decayK: selection.decayK,
    ...(selection.tunedAttnRatio !== undefined ? { tunedAttnRatio: selection.tunedAttnRatio } : {}),
    ...(selection.tunedFfnRatio !== undefined ? { tunedFfnRatio: selection.tunedFfnRatio } : {}),
    ...(selection.decayK ? { excluded: await earlierNegatives(settings.run, settings.stage, spec) } : {}),
  });
}

/** The k this stage selects with: what the counts it selects from must have been made with. */
export function stageCountingK(settings: ResolvedStageSettings, spec: ModelSpec): CountingK {
  const { ratio, decayK } = settings.selection;
  return countingK(spec, { ...DEFAULT_SELECTION, ratio, decayK, stage: settings.stage, seed: settings.seed });
}

/** The shape of this stage's score recorder: counting k of stage n + 1. */
export function stageRecorderShape(settings: ResolvedStageSettings, spec: ModelSpec): RecorderShape {
  const { ratio, decayK } = settings.selection;
  return {
    numLayers: spec.numLayers,
    numHeads: spec.numHeads,
    numKvHeads: spec.numKvHeads,
    intermediateSize: spec.intermediateSize,
    ...countingK(spec, { ...DEFAULT_SELECTION, ratio, decayK, stage: settings.stage + 1, seed: settings.seed }),
  };
}
