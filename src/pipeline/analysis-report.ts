/**
 * The human side of an analysis: `index.html` with the plots inlined (and saved next to it as
 * SVG files), and the per-layer summary table printed on the terminal. Pure: everything is
 * computed from analysis.json's content plus the averaged channel norms, so a report can be
 * rebuilt from the files of an analysis folder.
 */
import { basename } from 'node:path';
import { renderHtmlPage, type HtmlBlock, type HtmlSection } from '../report/html-page.js';
import { formatBytes, formatCount, formatDuration, formatNumber, formatPercent, formatPerplexity } from '../report/number-format.js';
import { renderBarChartSvg } from '../report/svg-bar-chart.js';
import { renderChannelDistributionSvg } from '../report/svg-distribution.js';
import { renderHeatmapSvg } from '../report/svg-heatmap.js';
import { renderLayerSummaryTable } from '../report/terminal-table.js';
import { ANALYSIS_FILES, type AnalysisJson, type LayerAnalysis } from './analysis-json.js';

export interface ReportInput {
  readonly analysis: AnalysisJson;
  /** Averaged channel norms per layer [I] (from stats.safetensors). */
  readonly channelNormAvg: readonly ArrayLike<number>[];
}

/** File name → content of every report file (index.html and the SVG plots). */
export function renderAnalysisReport(input: ReportInput): Map<string, string> {
  const a = input.analysis;
  const files = new Map<string, string>();
  const plots = analysisPlots(input);
  for (const [name, plot] of plots) files.set(name, plot.svg);
  files.set(ANALYSIS_FILES.report, renderHtmlPage({
    title: `APEX analysis: ${modelName(a)}`,
    subtitle: subtitle(a),
    sections: [
      summarySection(a),
      headSection(a, plots),
      channelSection(a, plots),
      ...(a.erank ? [erankSection(a, plots)] : []),
      provenanceSection(a, [...plots.keys()]),
    ],
    footer: `apex ${a.tool.version} · ${a.schema} · ${a.createdAt}`,
  }));
  return files;
}

/** The per-layer selection table for the terminal. */
export function renderAnalysisSummary(a: AnalysisJson, maxWidth?: number): string {
  const first = a.layers[0];
  const unitName = first?.heads.unit === 'kv-group' ? 'groups' : 'heads';
  const head = first
    ? `${a.layers.length} layers · k = ${first.heads.k} of ${first.heads.units} ${unitName}, ${formatCount(first.channels.k)} of ${formatCount(first.channels.units)} channels per side · ` +
      `${microBatches(a)} · calibration perplexity ${formatPerplexity(a.calibration.perplexity)}`
    : '';
  const table = renderLayerSummaryTable(
    a.layers.map((l) => ({ layer: l.layer, positive: l.heads.P, negative: l.heads.N, cvHeads: l.heads.normCv, cvChannels: l.channels.normCv })),
    { unitName, ...(maxWidth !== undefined ? { maxWidth } : {}) },
  );
  return `${head}\n${table}`;
}

interface Plot {
  readonly svg: string;
  readonly caption: string;
}

function modelName(a: AnalysisJson): string {
  return basename(a.model.path);
}

function headUnitWord(a: AnalysisJson): string {
  return a.model.config.numKvHeads === a.model.config.numHeads ? 'head' : 'KV group';
}

/** "3 micro-batches of 8", or "1 micro-batch of 4" when the sequences fill less than one batch. */
function microBatches(a: AnalysisJson): string {
  const size = Math.min(a.settings.batchSize, a.sequences);
  return `${formatCount(a.microBatches)} micro-batch${a.microBatches === 1 ? '' : 'es'} of ${size === a.settings.batchSize ? size : `${size} (batch size ${a.settings.batchSize})`}`;
}

function subtitle(a: AnalysisJson): string {
  const c = a.model.config;
  const heads = c.numKvHeads === c.numHeads ? `${c.numHeads} heads` : `${c.numHeads} query heads in ${c.numKvHeads} KV groups`;
  return `${c.numLayers} layers · ${heads} · ${formatCount(c.intermediateSize)} FFN channels · ${formatCount(a.sequences)} sequences (${formatCount(a.tokens)} tokens) in ${microBatches(a)}`;
}

/** Ablations and variants in words, or `none`. */
function variants(a: AnalysisJson): string {
  const s = a.settings;
  const parts = [
    ...(s.score === 'avg' ? ['score = averaged norms (ablation)'] : []),
    ...(s.decayK ? [`decaying K, stage ${s.stage}`] : []),
    ...(s.randomSelection ? [`random selection (seed ${s.seed})`] : []),
    ...(s.reverse ? ['reversed (P and N swapped)'] : []),
  ];
  return parts.length > 0 ? parts.join('; ') : 'none';
}

/** The first `n` entries of a list, then how many more there are. */
function listHead(values: readonly number[], n: number): string {
  if (values.length === 0) return '–';
  const shown = values.slice(0, n).join(', ');
  return values.length > n ? `${shown} … (+${formatCount(values.length - n)})` : shown;
}

function analysisPlots(input: ReportInput): Map<string, Plot> {
  const a = input.analysis;
  const unit = headUnitWord(a);
  const M = a.microBatches;
  const plots = new Map<string, Plot>();
  const layerNames = a.layers.map((l) => String(l.layer));
  const headP = a.layers.map((l) => l.heads.P);
  const headN = a.layers.map((l) => l.heads.N);
  const first = a.layers[0]!;
  plots.set(ANALYSIS_FILES.headHeatmap, {
    svg: renderHeatmapSvg({
      title: `Attention ${unit} scores per layer`,
      subtitle: `rank count over ${M} micro-batches, k = ${first.heads.k}`,
      values: a.layers.map((l) => l.heads.score),
      scale: 'diverging',
      domain: [-M, M],
      rowAxis: 'layer',
      columnAxis: unit,
      rowNames: layerNames,
      valueLabel: 'rank count',
      positive: headP,
      negative: headN,
    }),
    caption: `Each cell is one ${unit} of one layer: +1 for every micro-batch in which it was among the ${first.heads.k} most active, −1 for every one in which it was among the ${first.heads.k} least active. Red: advantageous, blue: disadvantageous. Framed cells are the selection an APEX stage expands: P (solid frame) lends its parameters to N (dashed frame).`,
  });
  // Under GQA, the query heads of a selected group carry its mark.
  const perGroup = a.model.config.numHeads / a.model.config.numKvHeads;
  const expand = (groups: readonly number[]) => groups.flatMap((g) => Array.from({ length: perGroup }, (_, j) => g * perGroup + j));
  plots.set(ANALYSIS_FILES.headNormHeatmap, {
    svg: renderHeatmapSvg({
      title: 'Mean activation norm per query head',
      subtitle: `‖head output‖ per micro-batch, mean of ${M}${perGroup > 1 ? ' · frames: heads of P/N groups' : ''}`,
      values: a.layers.map((l) => l.heads.queryHeadNormAvg),
      scale: positiveEverywhere(a.layers.map((l) => l.heads.queryHeadNormAvg)) ? 'sequential-log' : 'sequential',
      rowAxis: 'layer',
      columnAxis: 'query head',
      rowNames: layerNames,
      valueLabel: 'mean norm',
      positive: headP.map(expand),
      negative: headN.map(expand),
    }),
    caption: `The raw activations behind the scores (brighter is larger): the norm of a head's slice of the attention output before o_proj over a micro-batch's tokens, averaged over micro-batches.${perGroup > 1 ? ` Under grouped-query attention the ${perGroup} query heads of a selected KV group are framed together.` : ''}`,
  });
  plots.set(ANALYSIS_FILES.channelDistribution, {
    svg: renderChannelDistributionSvg({
      title: 'FFN channel scores per layer',
      subtitle: `rank count over ${M} micro-batches · top/bottom ${formatCount(first.channels.k)} of ${formatCount(first.channels.units)} channels per micro-batch`,
      scores: a.layers.map((l) => l.channels.score),
      positive: a.layers.map((l) => l.channels.P),
      negative: a.layers.map((l) => l.channels.N),
      rowNames: layerNames,
      valueLabel: `channel score (rank count, −${M} … +${M})`,
      heightScale: 'sqrt',
    }),
    caption: 'One histogram per layer over its channels. Channels at the right end were among the most active in (nearly) every micro-batch; the table in the summary lists them by index.',
  });
  plots.set(ANALYSIS_FILES.channelNormDistribution, {
    svg: renderChannelDistributionSvg({
      title: 'Mean FFN channel activation norm per layer',
      subtitle: '‖silu(x·W_gateᵀ)[:, c]‖ per micro-batch, averaged · P and N as above',
      scores: input.channelNormAvg,
      positive: a.layers.map((l) => l.channels.P),
      negative: a.layers.map((l) => l.channels.N),
      rowNames: layerNames,
      valueLabel: 'mean channel norm',
      heightScale: 'sqrt',
    }),
    caption: 'The raw norms behind the channel scores. A long right tail means a few channels carry most of the activation (a high coefficient of variation).',
  });
  if (a.erank) {
    const e = a.erank;
    const mean = (pick: (l: (typeof e.layers)[number]) => number) => e.layers.reduce((s, l) => s + pick(l), 0) / e.layers.length;
    plots.set(ANALYSIS_FILES.erankChart, {
      svg: renderBarChartSvg({
        title: 'Effective rank per module (mean over layers)',
        ...(e.base ? { subtitle: `W and ΔW = W − W_base (base: ${basename(e.base)})` } : {}),
        categories: [...e.modules],
        series: [
          { name: 'W', values: e.modules.map((m) => mean((l) => l.erank[m])) },
          ...(e.base ? [{ name: 'ΔW', values: e.modules.map((m) => mean((l) => l.delta![m])) }] : []),
        ],
        yLabel: 'effective rank',
        xLabel: 'module',
      }),
      caption: 'erank(W) = exp(entropy of σ / Σσ) over the singular values, in float64 (APEX-METHOD §6). The paper relates APEX\'s gain to a higher effective rank of the trained weights and of their update.',
    });
  }
  return plots;
}

function positiveEverywhere(rows: readonly (readonly number[])[]): boolean {
  return rows.every((r) => r.every((v) => v > 0));
}

function figure(plots: Map<string, Plot>, name: string): HtmlBlock {
  const p = plots.get(name)!;
  return { type: 'svg', svg: p.svg, caption: p.caption };
}

function summarySection(a: AnalysisJson): HtmlSection {
  const first = a.layers[0]!;
  const unit = headUnitWord(a);
  return {
    title: 'Summary',
    blocks: [
      {
        type: 'paragraph',
        text:
          `For every micro-batch of ${a.settings.batchSize} calibration sequences and every layer, the ${first.heads.k} ${unit}${first.heads.k === 1 ? '' : 's'} and ${formatCount(first.channels.k)} FFN channel${first.channels.k === 1 ? '' : 's'} with the largest activation norm get +1 and the same number with the smallest get −1. ` +
          `A unit's score is the sum over the ${a.microBatches} micro-batches. P (advantageous) are the highest-scoring units of a layer, N (disadvantageous) the lowest; an APEX stage re-parameterises N with the help of P.`,
      },
      {
        type: 'keyValue',
        entries: [
          ['model', a.model.path],
          ['data', dataLine(a)],
          ['calibration perplexity', `${formatPerplexity(a.calibration.perplexity)} (mean NLL ${formatNumber(a.calibration.meanNll)} over ${formatCount(a.calibration.targets)} targets)`],
          ['selection per layer', `${first.heads.k} of ${first.heads.units} ${unit}s and ${formatCount(first.channels.k)} of ${formatCount(first.channels.units)} channels per side (ratio ${a.settings.ratio}: ${formatPercent(first.channels.k / first.channels.units)} of channels)`],
          ['variants', variants(a)],
          ['seed', a.seed],
          ['backend', `${a.backend.name} (${a.backend.detail})`],
          ['time', `${formatDuration(a.timing.totalSeconds)} (forward ${formatDuration(a.timing.forwardSeconds)}${a.timing.erankSeconds !== undefined ? `, effective ranks ${formatDuration(a.timing.erankSeconds)}` : ''})`],
        ],
      },
      {
        type: 'table',
        caption: `Per layer: selected ${unit}s and channels (highest score first for P, lowest first for N), and the coefficient of variation (std / mean) of the averaged activation norms.`,
        columns: [
          'layer',
          { header: `P ${unit}s`, align: 'left' },
          { header: `N ${unit}s`, align: 'left' },
          `CV ${unit}s`,
          { header: 'P channels', align: 'left' },
          { header: 'N channels', align: 'left' },
          'CV channels',
        ],
        rows: a.layers.map((l) => [
          l.layer,
          l.heads.P.join(', '),
          l.heads.N.join(', '),
          cv(l.heads.normCv),
          listHead(l.channels.P, 8),
          listHead(l.channels.N, 8),
          cv(l.channels.normCv),
        ]),
      },
    ],
  };
}

function cv(v: number): string {
  return Number.isFinite(v) ? v.toFixed(3) : '–';
}

function dataLine(a: AnalysisJson): string {
  const d = a.data;
  const what = d.kind === 'builtin' ? `built-in corpus '${d.builtin}'` : d.kind === 'input-ids' ? `token ids ${d.paths.map((p) => basename(p)).join(', ')}` : `${d.kind} (${d.paths.length} file${d.paths.length === 1 ? '' : 's'})`;
  return `${what}: ${formatCount(a.sequences)} sequences of up to ${d.seqLen} tokens, ${formatCount(a.tokens)} tokens`;
}

function headSection(a: AnalysisJson, plots: Map<string, Plot>): HtmlSection {
  const unit = headUnitWord(a);
  return {
    title: 'Attention heads',
    blocks: [
      ...(unit === 'KV group'
        ? [{ type: 'paragraph', text: `This model uses grouped-query attention: the unit of selection is the KV group (the ${a.model.config.numHeads / a.model.config.numKvHeads} query heads that share one key/value head), with activation sqrt(Σ of its query heads' squared norms).` } as const]
        : []),
      figure(plots, ANALYSIS_FILES.headHeatmap),
      figure(plots, ANALYSIS_FILES.headNormHeatmap),
      {
        type: 'table',
        caption: `Scores per ${unit} (rank counts over ${a.microBatches} micro-batches).`,
        columns: ['layer', ...Array.from({ length: a.layers[0]!.heads.units }, (_, u) => `${unit === 'KV group' ? 'g' : 'h'}${u}`)],
        rows: a.layers.map((l) => [l.layer, ...l.heads.score.map((s, u) => `${s}${l.heads.P.includes(u) ? ' P' : l.heads.N.includes(u) ? ' N' : ''}`)]),
      },
    ],
  };
}

function channelSection(a: AnalysisJson, plots: Map<string, Plot>): HtmlSection {
  return {
    title: 'FFN channels',
    blocks: [
      figure(plots, ANALYSIS_FILES.channelDistribution),
      figure(plots, ANALYSIS_FILES.channelNormDistribution),
      {
        type: 'table',
        caption: 'The most and least advantageous channels of each layer, as channel index (score). Full lists: analysis.json (layers[i].channels.P / N); scores and norms: stats.safetensors.',
        columns: ['layer', { header: 'top P channels', align: 'left' }, { header: 'top N channels', align: 'left' }],
        rows: a.layers.map((l) => [l.layer, scored(l, l.channels.P), scored(l, l.channels.N)]),
      },
    ],
  };
}

function scored(l: LayerAnalysis, units: readonly number[]): string {
  const shown = units.slice(0, 10).map((c) => `${c} (${l.channels.score[c]})`).join(', ');
  return units.length > 10 ? `${shown} … (+${formatCount(units.length - 10)})` : shown || '–';
}

function erankSection(a: AnalysisJson, plots: Map<string, Plot>): HtmlSection {
  const e = a.erank!;
  const fmt = (v: number) => formatNumber(v, 4);
  const blocks: HtmlBlock[] = [
    figure(plots, ANALYSIS_FILES.erankChart),
    { type: 'table', caption: 'Effective rank of each weight matrix W.', columns: ['layer', ...e.modules], rows: e.layers.map((l) => [l.layer, ...e.modules.map((m) => fmt(l.erank[m]))]) },
  ];
  if (e.base) {
    blocks.push({ type: 'table', caption: `Effective rank of ΔW = W − W_base (base: ${e.base}).`, columns: ['layer', ...e.modules], rows: e.layers.map((l) => [l.layer, ...e.modules.map((m) => fmt(l.delta![m]))]) });
  }
  blocks.push({
    type: 'table',
    caption: 'Largest possible effective rank (min of the matrix dimensions) and the cost: mean time per matrix (read + float64 SVD, values only) on this machine.',
    columns: ['module', 'shape', 'full rank', 'seconds per matrix', 'matrices'],
    rows: e.timing.map((t) => [t.module, `${t.rows} × ${t.cols}`, Math.min(t.rows, t.cols), formatNumber(t.seconds, 3), t.matrices]),
  });
  return { title: 'Effective rank', blocks };
}

function provenanceSection(a: AnalysisJson, plotFiles: readonly string[]): HtmlSection {
  const d = a.data;
  return {
    title: 'Provenance',
    blocks: [
      {
        type: 'keyValue',
        entries: [
          ['model folder', a.model.path],
          ['architecture', `${a.model.architecture}, ${formatCount(a.model.parameters)} parameters, stored as ${a.model.dtypes.join(', ')}`],
          ...a.model.files.map((f) => [`sha256 ${f.file}`, `${f.sha256} (${formatBytes(f.bytes)})`] as const),
          ...(a.model.otherFiles ?? []).map((f) => [`sha256 ${f.file}`, `${f.sha256} (${formatBytes(f.bytes)})`] as const),
          ['data kind', d.kind + (d.builtin ? ` (${d.builtin})` : '')],
          ...d.paths.map((p, i) => [`data file ${i + 1}`, `${p} sha256 ${d.sha256[i] ?? '–'}`] as const),
          ['documents / tokens', `${formatCount(d.documents)} documents, ${formatCount(d.tokens)} tokens`],
          ['sequence length, samples', `${d.seqLen}, ${d.samples ?? 'all'} (sampling seed ${d.seed}, split ${d.split})`],
          ['memory estimate', `${formatBytes(a.memory.estimateBytes)} of a ${formatBytes(a.memory.budgetBytes)} budget (${a.memory.chunkSequences} sequences per chunk)`],
        ],
      },
      {
        type: 'links',
        items: [
          { text: `${ANALYSIS_FILES.json} (everything on this page, machine-readable)`, href: ANALYSIS_FILES.json },
          { text: `${ANALYSIS_FILES.stats} (scores and averaged norms; the input of an APEX stage)`, href: ANALYSIS_FILES.stats },
          ...plotFiles.map((f) => ({ text: f, href: f })),
        ],
      },
    ],
  };
}
