/**
 * `<run>/index.html`: the page a person opens after `apex run`. Held-out perplexity before,
 * after every stage and for the baseline (table and bar chart), the training curves of all
 * stages and the baseline on one token axis with the stage boundaries, the advantage heatmaps
 * (the initial analysis and the rank counts recorded during each stage), and links to every
 * stage's model folder and to the analysis report. Pure: the caller reads the files
 * (run-report-inputs.ts).
 */
import { renderHtmlPage, type HtmlBlock, type HtmlSection } from '../report/html-page.js';
import { formatCount, formatDuration, formatNumber, formatPercent, formatPerplexity } from '../report/number-format.js';
import { renderBarChartSvg } from '../report/svg-bar-chart.js';
import { renderHeatmapSvg } from '../report/svg-heatmap.js';
import { renderLineChartSvg, type LinePoint, type LineSeries } from '../report/svg-line-chart.js';
import type { MetricsLine } from '../train/metrics-log.js';
import type { RunSummary, StageSummary } from './run-summary.js';

/** The metrics of every stage of one trained line (the run, or the baseline), in stage order. */
export interface TrainingCurve {
  readonly name: string;
  readonly stages: readonly (readonly MetricsLine[])[];
}

/** The rank counts recorded during one stage, per layer, with the units they select next. */
export interface StageScores {
  readonly stage: number;
  /** [layer][unit] head-unit scores. */
  readonly heads: readonly Float32Array[];
  /** The P and N head units the next stage selected from these scores, per layer, when it ran. */
  readonly nextSelection?: { readonly P: readonly (readonly number[])[]; readonly N: readonly (readonly number[])[] };
}

export interface RunReportInput {
  readonly summary: RunSummary;
  readonly curves: readonly TrainingCurve[];
  /** `heads-score.svg` of the analysis, when the run has one. */
  readonly analysisHeatmap?: string;
  readonly stageScores: readonly StageScores[];
  /** What a head unit is: `head` (MHA) or `KV group` (GQA). */
  readonly headUnit: string;
}

const methodName = (s: RunSummary) => (s.method === 'apex' ? `APEX (${s.setting})` : s.method);

export function renderRunReport(input: RunReportInput): string {
  const s = input.summary;
  return renderHtmlPage({
    title: `apex run: ${methodName(s)} on ${lastSegment(s.baseModel.argument)}`,
    subtitle: `${s.stages.length} stage${s.stages.length === 1 ? '' : 's'} · ${formatCount(totalTokens(s.stages))} training tokens · held-out perplexity ${formatPerplexity(s.perplexity.before)} → ${formatPerplexity(s.perplexity.final)}${s.perplexity.baseline !== null ? ` (vanilla ${formatPerplexity(s.perplexity.baseline)})` : ''}`,
    sections: [
      perplexitySection(s),
      curveSection(input),
      ...(input.analysisHeatmap !== undefined || input.stageScores.length > 0 ? [scoreSection(input)] : []),
      stagesSection(s),
      runSection(s),
    ],
    footer: `apex ${s.apexVersion} · ${s.schema} · config ${s.configHash.slice(0, 16)} · ${s.invocation.finishedAt}`,
  });
}

function lastSegment(p: string): string {
  return p.replace(/[/\\]+$/, '').split(/[/\\]/).pop() ?? p;
}

function totalTokens(stages: readonly StageSummary[]): number {
  return stages.reduce((n, st) => n + st.tokens, 0);
}

function perplexitySection(s: RunSummary): HtmlSection {
  const baseline = s.baseline?.stages ?? [];
  const categories = ['before training', ...s.stages.map((st) => `stage ${st.stage}`)];
  // The baseline's columns only when there is a baseline (a vanilla run has none beside itself).
  const compared = baseline.length > 0;
  const rows = [
    ['before training', 0, formatPerplexity(s.before.perplexity), ...(compared ? [formatPerplexity(s.before.perplexity), null] : [])],
    ...s.stages.map((st, i) => {
      const b = baseline[i];
      return [
        `stage ${st.stage}`,
        formatCount(s.stages.slice(0, i + 1).reduce((n, x) => n + x.tokens, 0)),
        formatPerplexity(st.eval.perplexity),
        ...(compared ? [b ? formatPerplexity(b.eval.perplexity) : null, b ? formatPercent(st.eval.perplexity / b.eval.perplexity - 1) : null] : []),
      ];
    }),
  ];
  const series = [{ name: methodName(s), values: [s.before.perplexity, ...s.stages.map((st) => st.eval.perplexity)] }];
  if (baseline.length > 0) series.push({ name: 'vanilla (same tokens)', values: [s.before.perplexity, ...baseline.map((b) => b.eval.perplexity)] });
  const blocks: HtmlBlock[] = [
    {
      type: 'paragraph',
      text: `Mean next-token perplexity on ${formatCount(s.before.sequences)} held-out sequences (${formatCount(s.before.tokens)} predicted tokens), the same for every model. Lower is better.`,
    },
    { type: 'table', columns: ['model', 'tokens trained', methodName(s), ...(compared ? ['vanilla', 'vs vanilla'] : [])], rows },
    {
      type: 'svg',
      svg: renderBarChartSvg({ title: 'Held-out perplexity', categories, series, yLabel: 'perplexity', formatValue: formatPerplexity }),
      caption: baseline.length > 0 ? 'Each stage of the run next to the vanilla baseline after the same number of tokens.' : 'Perplexity after each stage.',
    },
  ];
  return { title: 'Held-out perplexity', blocks };
}

/** Points of one curve on the cumulative token axis: per-step training loss and the evaluations. */
function curvePoints(curve: TrainingCurve): { train: LinePoint[]; evals: LinePoint[]; ends: number[] } {
  const train: LinePoint[] = [];
  const evals: LinePoint[] = [];
  const ends: number[] = [];
  let offset = 0;
  for (const lines of curve.stages) {
    let last = 0;
    for (const l of lines) {
      if (l.loss !== undefined) train.push({ x: offset + l.tokens, y: l.loss });
      if (l.eval_loss !== undefined) evals.push({ x: offset + l.tokens, y: l.eval_loss });
      last = Math.max(last, l.tokens);
    }
    offset += last;
    ends.push(offset);
  }
  return { train, evals, ends };
}

function curveSection(input: RunReportInput): HtmlSection {
  const series: LineSeries[] = [];
  let boundaries: number[] = [];
  let withEvals = false;
  input.curves.forEach((curve, i) => {
    const { train, evals, ends } = curvePoints(curve);
    if (i === 0) boundaries = ends.slice(0, -1);
    // Later lines dashed: a baseline that tracks the run closely stays visible on top of it.
    series.push({ name: `${curve.name} train loss`, points: train, smoothing: 0.6, dashed: i > 0 });
    if (evals.length > 0) series.push({ name: `${curve.name} held-out loss`, points: evals, markers: true, dashed: true });
    withEvals ||= evals.length > 0;
  });
  const chart = renderLineChartSvg({
    title: 'Training curves',
    subtitle: 'loss in nats per token; x = training tokens over all stages',
    series,
    xLabel: 'training tokens',
    yLabel: 'loss (nats)',
    stageBoundaries: boundaries.map((x, i) => ({ x, label: `stage ${i + 2}` })),
  });
  return {
    title: 'Training curves',
    blocks: [
      {
        type: 'svg',
        svg: chart,
        caption: `Training loss per step (smoothed, raw underneath)${withEvals ? ' and the periodic held-out evaluations' : ''}; dashed verticals mark stage boundaries, where the optimizer restarts.`,
      },
    ],
  };
}

function scoreSection(input: RunReportInput): HtmlSection {
  const blocks: HtmlBlock[] = [
    {
      type: 'paragraph',
      text: `Rank counts per layer and ${input.headUnit}: +1 each time a unit is among the k most active of a micro-batch, −1 among the k least. The initial assessment selects stage 1's advantageous (P, solid outline) and disadvantageous (N, dashed) units; the counts recorded while stage n trains select stage n + 1's.`,
    },
  ];
  if (input.analysisHeatmap !== undefined) blocks.push({ type: 'svg', svg: input.analysisHeatmap, caption: 'Initial assessment on the calibration data (from the analysis report).' });
  for (const st of input.stageScores) {
    const svg = renderHeatmapSvg({
      title: `Rank counts recorded during stage ${st.stage}`,
      ...(st.nextSelection ? { subtitle: `outlined: the units stage ${st.stage + 1} selected` } : {}),
      values: st.heads,
      scale: 'diverging',
      rowAxis: 'layer',
      columnAxis: input.headUnit,
      valueLabel: 'rank count',
      ...(st.nextSelection ? { positive: st.nextSelection.P, negative: st.nextSelection.N } : {}),
    });
    blocks.push({ type: 'svg', svg, caption: `Counts over the training micro-batches of stage ${st.stage} (stages/${st.stage}/scores.safetensors).` });
  }
  return { title: 'Advantage scores', blocks };
}

function stageRows(label: string, stages: readonly StageSummary[]): (string | number | null)[][] {
  return stages.map((st) => [
    `${label} ${st.stage}`,
    formatCount(st.steps),
    formatCount(st.tokens),
    formatCount(st.trainableParams),
    formatPercent(st.trainableFraction),
    st.finalTrainLoss !== null ? formatNumber(st.finalTrainLoss, 4) : null,
    formatPerplexity(st.eval.perplexity),
    formatDuration(st.trainSeconds),
  ]);
}

function stagesSection(s: RunSummary): HtmlSection {
  const rows = [...stageRows('stage', s.stages), ...stageRows('vanilla stage', s.baseline?.stages ?? [])];
  const links = [
    ...(s.analysis ? [{ text: 'analysis report', href: s.analysis.report }] : []),
    ...s.stages.map((st) => ({ text: `stage ${st.stage} model (${st.model}/)`, href: `${st.model}/` })),
    ...(s.baseline?.stages ?? []).map((st) => ({ text: `vanilla stage ${st.stage} model (${st.model}/)`, href: `${st.model}/` })),
    { text: 'summary.json', href: 'summary.json' },
  ];
  return {
    title: 'Stages',
    blocks: [
      { type: 'table', columns: ['stage', 'steps', 'tokens', 'trainable', 'fraction', 'last train loss', 'held-out ppl', 'time'], rows },
      { type: 'paragraph', text: 'Every stage folder holds an ordinary Hugging Face checkpoint in model/ (the operators fused into the weights), next to its operators, scores, metrics.jsonl and provenance.' },
      { type: 'links', items: links },
    ],
  };
}

function runSection(s: RunSummary): HtmlSection {
  const c = s.config;
  // What the stages trained (a token budget rounds up to whole steps), next to what was asked.
  const trained = s.stages[0];
  const asked = c.stages.steps !== null ? `${c.stages.steps} steps` : `${formatCount(c.stages.tokens ?? 0)} tokens`;
  const budget = trained !== undefined ? `${formatCount(trained.steps)} steps = ${formatCount(trained.tokens)} tokens per stage${c.stages.steps === null && trained.tokens !== c.stages.tokens ? ` (asked: ${asked})` : ''}` : `${asked} per stage`;
  return {
    title: 'Run',
    blocks: [
      {
        type: 'keyValue',
        entries: [
          ['base model', s.baseModel.argument],
          ['parameters', formatCount(s.baseModel.parameters)],
          ['training data', s.data.train.builtin !== undefined ? `builtin:${s.data.train.builtin}` : s.data.train.paths.join(', ')],
          ['training split', `${s.data.train.split}: ${formatCount(s.data.train.documents)} documents, ${formatCount(s.data.train.tokens)} tokens`],
          ['held-out data', `${s.data.eval.split}: ${formatCount(s.data.eval.documents)} documents, ${formatCount(s.before.sequences)} sequences`],
          ['method', methodName(s)],
          ['stages', `${c.stages.count} × ${budget}; each step ${c.optimizer.grad_accum > 1 ? `${c.optimizer.grad_accum} micro-batches of ` : ''}${c.optimizer.batch_size} × ${c.data.seq_len} tokens, lr ${formatNumber(c.optimizer.lr)}`],
          ['seed', s.seed],
          ['backend', `${s.backend.name} (${s.backend.detail})`],
          ['config hash', s.configHash],
          ['time in recorded steps', `${formatDuration(s.timings.totalSeconds)} (analysis, training, evaluation; over all invocations)`],
          ['this invocation', `${s.invocation.start}, ${formatDuration(s.timings.thisInvocationSeconds)}${s.invocation.skipped.length > 0 ? `; kept from before: ${s.invocation.skipped.join(', ')}` : ''}`],
        ],
      },
      { type: 'links', items: [{ text: 'summary.json', href: 'summary.json' }, { text: 'run.json (config and progress)', href: 'run.json' }] },
    ],
  };
}
