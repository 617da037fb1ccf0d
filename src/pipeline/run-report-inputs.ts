/**
 * Reads what the run report shows from the run folder: every stage's metrics.jsonl (of the run
 * and the baseline), the analysis heatmap, the rank counts each stage recorded and the units
 * the following stage selected from them. Files a run does not have (a baseline-only run has
 * no analysis and no scores) are simply left out of the report.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelSpec } from '../model/model-spec.js';
import { readOperatorFile } from '../ops/operator-file.js';
import { readScoreFile } from '../ops/score-file.js';
import { readMetrics } from '../train/metrics-log.js';
import { ANALYSIS_FILES } from './analysis-json.js';
import { OPERATORS_FILE } from './expand-paths.js';
import type { RunReportInput, StageScores, TrainingCurve } from './run-report.js';
import type { RunSummary, StageSummary } from './run-summary.js';

const SCORES_FILE = 'scores.safetensors';
const METRICS_FILE = 'metrics.jsonl';

async function curve(run: string, name: string, stages: readonly StageSummary[]): Promise<TrainingCurve> {
  return { name, stages: await Promise.all(stages.map((st) => readMetrics(join(run, st.path, METRICS_FILE)))) };
}

async function stageScores(run: string, stages: readonly StageSummary[], spec: ModelSpec): Promise<StageScores[]> {
  const out: StageScores[] = [];
  for (const [i, st] of stages.entries()) {
    const scoresPath = join(run, st.path, SCORES_FILE);
    if (!existsSync(scoresPath)) continue;
    const scores = await readScoreFile(scoresPath, spec);
    const next = stages[i + 1];
    const opsPath = next ? join(run, next.path, OPERATORS_FILE) : undefined;
    let nextSelection: StageScores['nextSelection'];
    if (opsPath !== undefined && existsSync(opsPath)) {
      const ops = await readOperatorFile(opsPath, spec);
      const P: number[][] = Array.from({ length: spec.numLayers }, () => []);
      const N: number[][] = Array.from({ length: spec.numLayers }, () => []);
      for (const l of ops.layers) {
        if (!l.attn) continue;
        P[l.layer] = Array.from(l.attn.P);
        N[l.layer] = Array.from(l.attn.N);
      }
      nextSelection = { P, N };
    }
    out.push({ stage: st.stage, heads: scores.layers.map((l) => l.headScore), ...(nextSelection ? { nextSelection } : {}) });
  }
  return out;
}

export async function collectRunReportInputs(summary: RunSummary, spec: ModelSpec): Promise<RunReportInput> {
  const run = summary.run;
  const curves = [await curve(run, summary.method === 'apex' ? 'APEX' : summary.method, summary.stages)];
  if (summary.baseline) curves.push(await curve(run, 'vanilla', summary.baseline.stages));
  const heatmapPath = summary.analysis ? join(run, summary.analysis.path, ANALYSIS_FILES.headHeatmap) : undefined;
  const analysisHeatmap = heatmapPath !== undefined && existsSync(heatmapPath) ? await readFile(heatmapPath, 'utf8') : undefined;
  return {
    summary,
    curves,
    ...(analysisHeatmap !== undefined ? { analysisHeatmap } : {}),
    stageScores: await stageScores(run, summary.stages, spec),
    headUnit: spec.numKvHeads < spec.numHeads ? 'KV group' : 'head',
  };
}
