/**
 * `analysis.json`: the machine-readable record of one advantage assessment (APEX-METHOD §2, §7),
 * versioned by `schema`. It says what was measured (model with fingerprints, data spec, seed,
 * backend, settings), the per-layer scores and selections, the spread diagnostics, and the
 * effective ranks when asked. Channel norms and the float scores live in stats.safetensors;
 * the JSON holds the integer rank counts of both unit kinds and the head norms.
 */
import type { BackendName } from '../model/backend.js';
import type { ModelSpec } from '../model/model-spec.js';
import type { RankCountRecorder } from '../ops/rank-counts.js';
import type { LayerSelection } from '../ops/selection.js';
import type { DataSpecRecord } from '../train/data.js';
import type { ErankResult } from './analysis-erank.js';
import type { ModelRecord } from './analysis-provenance.js';
import type { SelectionSettings } from './analysis-selection.js';

export const ANALYSIS_SCHEMA = 'apex.analysis/1';
export const ANALYSIS_FILES = {
  json: 'analysis.json',
  stats: 'stats.safetensors',
  report: 'index.html',
  headHeatmap: 'heads-score.svg',
  headNormHeatmap: 'heads-norm.svg',
  channelDistribution: 'channels-score.svg',
  channelNormDistribution: 'channels-norm.svg',
  erankChart: 'erank.svg',
} as const;

/** The files of an analysis folder (the effective-rank chart only with --erank). */
export function analysisFiles(withErank: boolean): Record<string, string> {
  const { erankChart, ...always } = ANALYSIS_FILES;
  return withErank ? { ...always, erankChart } : always;
}

export interface UnitAnalysis {
  /** What a head unit is: a query head (MHA) or a KV group (GQA, §2). */
  readonly unit: 'head' | 'kv-group' | 'channel';
  readonly units: number;
  /** Selection size of the layer (also the k of the Top-k / Min-k counts). */
  readonly k: number;
  readonly P: number[];
  readonly N: number[];
  /** Summed Top-k / Min-k counts per unit. */
  readonly score: number[];
  /** Spread of the averaged unit activation norms (§2 diagnostics). */
  readonly normMean: number;
  readonly normStd: number;
  readonly normCv: number;
}

export interface HeadAnalysis extends UnitAnalysis {
  /** Averaged activation norm per head unit. */
  readonly normAvg: number[];
  /** Averaged activation norm per query head (equals normAvg under MHA). */
  readonly queryHeadNormAvg: number[];
}

export interface LayerAnalysis {
  readonly layer: number;
  readonly heads: HeadAnalysis;
  readonly channels: UnitAnalysis;
}

export interface AnalysisJson {
  readonly schema: typeof ANALYSIS_SCHEMA;
  readonly tool: { readonly name: 'apex'; readonly version: string };
  readonly createdAt: string;
  readonly model: ModelRecord;
  readonly data: DataSpecRecord;
  readonly seed: number;
  readonly backend: { readonly name: BackendName; readonly detail: string };
  readonly settings: SelectionSettings & { readonly batchSize: number };
  readonly sequences: number;
  /** Tokens that entered the statistics (padding excluded). */
  readonly tokens: number;
  readonly microBatches: number;
  /** Next-token NLL of the model on the calibration data (a sanity check of model and data). */
  readonly calibration: { readonly meanNll: number; readonly perplexity: number; readonly targets: number };
  readonly memory: { readonly estimateBytes: number; readonly budgetBytes: number; readonly chunkSequences: number };
  readonly layers: LayerAnalysis[];
  readonly erank?: ErankResult;
  readonly files: Record<string, string>;
  readonly timing: { readonly forwardSeconds: number; readonly erankSeconds?: number; readonly totalSeconds: number };
}

/** Per-layer records from the recorder (float64 norms, integer counts) and the selections. */
export function layerAnalyses(spec: ModelSpec, recorder: RankCountRecorder, selections: readonly LayerSelection[]): LayerAnalysis[] {
  const headUnit = spec.numKvHeads === spec.numHeads ? 'head' : 'kv-group';
  return selections.map((sel) => {
    const layer = sel.layer;
    const d = recorder.diagnostics(layer);
    return {
      layer,
      heads: {
        unit: headUnit,
        units: spec.numKvHeads,
        k: sel.headK,
        P: Array.from(sel.heads.P),
        N: Array.from(sel.heads.N),
        score: Array.from(recorder.headScores(layer)),
        normAvg: Array.from(recorder.headUnitNormAvg(layer)),
        queryHeadNormAvg: Array.from(recorder.headNormAvg(layer)),
        normMean: d.heads.mean,
        normStd: d.heads.std,
        normCv: d.heads.cv,
      },
      channels: {
        unit: 'channel',
        units: spec.intermediateSize,
        k: sel.channelK,
        P: Array.from(sel.channels.P),
        N: Array.from(sel.channels.N),
        score: Array.from(recorder.channelScores(layer)),
        normMean: d.channels.mean,
        normStd: d.channels.std,
        normCv: d.channels.cv,
      },
    };
  });
}

/** What `apex analyze --json` prints: the selection per layer and where everything is, without the score arrays. */
export interface AnalysisCommandResult {
  readonly output: string;
  readonly files: Record<string, string>;
  readonly model: string;
  readonly backend: string;
  readonly sequences: number;
  readonly tokens: number;
  readonly microBatches: number;
  readonly calibration: AnalysisJson['calibration'];
  readonly memoryEstimateBytes: number;
  readonly layers: {
    readonly layer: number;
    readonly heads: { readonly unit: string; readonly k: number; readonly P: number[]; readonly N: number[]; readonly cv: number };
    readonly channels: { readonly k: number; readonly P: number[]; readonly N: number[]; readonly cv: number };
  }[];
  readonly erankSeconds?: number;
  readonly dumpStats?: string;
  readonly seconds: number;
}

export function analysisCommandResult(a: AnalysisJson, output: string, memoryEstimateBytes: number, dumpStats?: string): AnalysisCommandResult {
  return {
    output,
    files: a.files,
    model: a.model.path,
    backend: a.backend.name,
    sequences: a.sequences,
    tokens: a.tokens,
    microBatches: a.microBatches,
    calibration: a.calibration,
    memoryEstimateBytes,
    layers: a.layers.map((l) => ({
      layer: l.layer,
      heads: { unit: l.heads.unit, k: l.heads.k, P: l.heads.P, N: l.heads.N, cv: l.heads.normCv },
      channels: { k: l.channels.k, P: l.channels.P, N: l.channels.N, cv: l.channels.normCv },
    })),
    ...(a.erank ? { erankSeconds: a.erank.seconds } : {}),
    ...(dumpStats !== undefined ? { dumpStats } : {}),
    seconds: a.timing.totalSeconds,
  };
}
