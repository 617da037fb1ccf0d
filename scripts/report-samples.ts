/**
 * Renders sample report outputs (heatmaps, channel distributions, loss curves, bar chart, an
 * index.html and terminal tables) from synthetic but structured data, for looking at the
 * report library's output. Writes to a folder under /tmp (argument 1, default
 * /tmp/apex-report-samples), never into the repository.
 *
 *   npx tsx scripts/report-samples.ts [out-dir]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderHtmlPage } from '../src/report/html-page.js';
import { formatBytes, formatCount, formatDuration, formatPercent, formatPerplexity } from '../src/report/number-format.js';
import { renderBarChartSvg } from '../src/report/svg-bar-chart.js';
import { renderChannelDistributionSvg } from '../src/report/svg-distribution.js';
import { renderHeatmapSvg } from '../src/report/svg-heatmap.js';
import { renderLineChartSvg, type LinePoint } from '../src/report/svg-line-chart.js';
import { renderLayerSummaryTable, renderTerminalTable } from '../src/report/terminal-table.js';
// The fuzzer's seeded generator (mulberry32), so every run draws the same samples.
import { rng } from './lib/safetensors-fuzz.js';

const outDir = process.argv[2] ?? '/tmp/apex-report-samples';
mkdirSync(outDir, { recursive: true });

const random = rng(42);
const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());

/** Top-k / bottom-k of a row, ordered as the selection spec orders them. */
function selectTails(scores: ArrayLike<number>, k: number): { p: number[]; n: number[] } {
  const idx = Array.from({ length: scores.length }, (_, i) => i);
  const p = [...idx].sort((a, b) => (scores[b] as number) - (scores[a] as number) || a - b).slice(0, k);
  const taken = new Set(p);
  const n = idx.filter((i) => !taken.has(i)).sort((a, b) => (scores[a] as number) - (scores[b] as number) || a - b).slice(0, k);
  return { p, n };
}

/** Rank counts over `batches` micro-batches: a few strong heads per layer, a few weak ones. */
function rankCounts(layers: number, units: number, batches: number): number[][] {
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: units }, (_, u) => {
      const strength = 1.6 * Math.sin((u * 7 + l * 3) * 0.37) + (u === l % units ? 2 : 0) - (u === (l * 5 + 3) % units ? 2 : 0);
      return Math.round(batches * Math.tanh(0.45 * strength + 0.35 * gaussian()));
    }),
  );
}

const written: string[] = [];
function save(name: string, content: string): void {
  writeFileSync(join(outDir, name), content);
  written.push(join(outDir, name));
}

const heads = rankCounts(22, 32, 96);
const headSel = heads.map((row) => selectTails(row, 6));
save('heatmap-22x32.svg', renderHeatmapSvg({
  title: 'Head advantage (rank counts), TinyLlama-1.1B <sample> & "friends"',
  subtitle: '96 calibration micro-batches · P/N = 6 of 32 heads per layer (18.75%)',
  values: heads, scale: 'diverging', valueLabel: 'rank count',
  positive: headSel.map((s) => s.p), negative: headSel.map((s) => s.n),
}));
const groups = rankCounts(5, 4, 40);
const groupSel = groups.map((row) => selectTails(row, 1));
save('heatmap-5x4.svg', renderHeatmapSvg({
  title: 'KV-group advantage, stories260K', values: groups, scale: 'diverging', columnAxis: 'KV group',
  valueLabel: 'rank count', positive: groupSel.map((s) => s.p), negative: groupSel.map((s) => s.n),
}));
const norms = Array.from({ length: 32 }, (_, l) => Array.from({ length: 32 }, (_, h) => Math.exp(0.6 * gaussian() + 0.03 * l + (h % 7 === 0 ? 0.8 : 0))));
save('heatmap-norms-32x32.svg', renderHeatmapSvg({
  title: 'Average head activation norm', values: norms, scale: 'sequential-log', valueLabel: '‖o_h‖ (mean)',
  positive: norms.map((row) => selectTails(row, 6).p), negative: norms.map((row) => selectTails(row, 6).n),
}));

/** Channel rank counts: mostly noise around 0, a heavy positive tail that grows with depth. */
const channels = Array.from({ length: 22 }, (_, l) => {
  const row = new Float32Array(5632);
  for (let c = 0; c < row.length; c += 1) {
    const heavy = random() < 0.04 + 0.004 * l ? 2.5 + gaussian() : 0;
    row[c] = Math.max(-96, Math.min(96, Math.round(96 * Math.tanh(0.45 * gaussian() + heavy - 0.25))));
  }
  return row;
});
const channelSel = channels.map((row) => selectTails(row, 1056));
save('distribution-22x5632.svg', renderChannelDistributionSvg({
  title: 'FFN channel advantage per layer', subtitle: '5,632 channels per layer · P/N = 1,056 per side (18.75%)',
  scores: channels, valueLabel: 'channel score (rank count over 96 micro-batches)',
  positive: channelSel.map((s) => s.p), negative: channelSel.map((s) => s.n),
}));
const bigNorms = Array.from({ length: 32 }, (_, l) => Float32Array.from({ length: 11008 }, () => Math.exp(gaussian() * (0.4 + l / 80)) * (1 + l / 16)));
save('distribution-32x11008-norms.svg', renderChannelDistributionSvg({
  title: 'LLaMA-2-7B-shaped channel norms', subtitle: '11,008 channels per layer · P/N = 2,064 per side',
  scores: bigNorms, valueLabel: 'mean ‖silu(gate)‖', positive: bigNorms.map((row) => selectTails(row, 2064).p), negative: bigNorms.map((row) => selectTails(row, 2064).n),
}));
const smallChannels = Array.from({ length: 5 }, () => Float32Array.from({ length: 172 }, () => Math.exp(gaussian() * 0.5)));
save('distribution-5x172-norms.svg', renderChannelDistributionSvg({
  title: 'stories260K channel norms', scores: smallChannels, valueLabel: 'mean ‖silu(gate)‖', heightScale: 'sqrt',
  positive: smallChannels.map((row) => selectTails(row, 32).p), negative: smallChannels.map((row) => selectTails(row, 32).n),
}));

/** Loss curves of a two-stage APEX run next to vanilla, with periodic evals. */
const steps = 3000;
const curve = (step: number, floor: number, rate: number) => floor + 2.2 * Math.exp(-step / rate);
const trainApex: LinePoint[] = [];
const trainVanilla: LinePoint[] = [];
for (let s = 0; s <= steps; s += 1) {
  const bump = s >= 1500 && s < 1560 ? 0.08 * (1 - (s - 1500) / 60) : 0;
  trainApex.push({ x: s, y: curve(s, 2.05, 700) + bump + 0.06 * gaussian() });
  trainVanilla.push({ x: s, y: curve(s, 2.12, 800) + 0.06 * gaussian() });
}
const evalSteps = Array.from({ length: 13 }, (_, i) => i * 250);
save('loss-curves.svg', renderLineChartSvg({
  title: 'Training loss: APEX (2 stages) vs vanilla', subtitle: 'llama-mha-f32 on the bundled corpus · same token budget',
  xLabel: 'step', yLabel: 'loss',
  series: [
    { name: 'APEX train', points: trainApex, smoothing: 0.95 },
    { name: 'vanilla train', points: trainVanilla, smoothing: 0.95 },
    { name: 'APEX eval', points: evalSteps.map((s) => ({ x: s, y: curve(s, 2.15, 720) })), markers: true, dashed: true },
    { name: 'vanilla eval', points: evalSteps.map((s) => ({ x: s, y: curve(s, 2.22, 820) })), markers: true, dashed: true },
  ],
  stageBoundaries: [{ x: 1500, label: 'stage 2' }],
}));
const tokens = (s: number) => s * 16 * 512;
save('perplexity-log.svg', renderLineChartSvg({
  title: 'Held-out perplexity', xLabel: 'tokens', yLabel: 'perplexity', logY: true,
  series: [
    { name: 'APEX', points: evalSteps.map((s) => ({ x: tokens(s), y: Math.exp(curve(s, 2.15, 720)) })), markers: true },
    { name: 'vanilla', points: evalSteps.map((s) => ({ x: tokens(s), y: Math.exp(curve(s, 2.22, 820)) })), markers: true },
  ],
  stageBoundaries: [{ x: tokens(1500), label: 'stage 2' }],
}));
const pplBars = renderBarChartSvg({
  title: 'Perplexity per stage', categories: ['base', 'stage 1', 'stage 2'], yLabel: 'held-out perplexity', xLabel: 'checkpoint',
  series: [{ name: 'APEX full', values: [77.37, 10.91, 9.04] }, { name: 'vanilla', values: [77.37, 11.62, 9.71] }, { name: 'LoRA r8', values: [77.37, 14.2, null] }],
  formatValue: formatPerplexity,
});
save('bars-perplexity.svg', pplBars);
const modules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
save('bars-erank.svg', renderBarChartSvg({
  title: 'Effective rank of ΔW per module (layer mean)', categories: modules, yLabel: 'effective rank',
  series: [{ name: 'APEX', values: modules.map((_, i) => 40 + 7 * i + 3 * random()) }, { name: 'vanilla', values: modules.map((_, i) => 35 + 6 * i + 3 * random()) }],
}));
save('bars-long-labels.svg', renderBarChartSvg({
  title: 'CV of channel norms per layer', categories: Array.from({ length: 22 }, (_, i) => `model.layers.${i}.mlp`), yLabel: 'CV',
  series: [{ name: 'CV', values: Array.from({ length: 22 }, () => 0.5 + random()) }],
}));

const summaryRows = heads.map((row, l) => ({
  layer: l, positive: headSel[l]!.p, negative: headSel[l]!.n,
  cvHeads: 0.3 + 0.02 * l + 0.05 * random(), cvChannels: 0.8 + 0.03 * l + 0.05 * random(),
}));
const summaryTable = renderLayerSummaryTable(summaryRows);
const runTable = renderTerminalTable({
  columns: ['checkpoint', 'method', 'perplexity', 'tokens', 'trainable', 'time'],
  rows: [
    ['base', '–', formatPerplexity(77.37), '0', '–', '–'],
    ['stage 1', 'APEX full', formatPerplexity(10.91), formatCount(12_288_000), formatPercent(1.0012), formatDuration(83.2)],
    ['stage 2', 'APEX full', formatPerplexity(9.04), formatCount(24_576_000), formatPercent(1.0012), formatDuration(171)],
    ['vanilla', 'vanilla', formatPerplexity(9.71), formatCount(24_576_000), formatPercent(1), formatDuration(160.4)],
  ],
});
save('summary-table.txt', `${runTable}\n\n${summaryTable}\n\n${renderLayerSummaryTable(summaryRows.slice(0, 3), { maxWidth: 40 })}\n`);

save('index.html', renderHtmlPage({
  title: 'APEX run: llama-mha-f32 <demo> & "friends"',
  subtitle: 'analyze → 2 × (finetune → expand → eval), vanilla baseline at the same token budget',
  sections: [
    { title: 'Summary', blocks: [
      { type: 'keyValue', entries: [['model', 'fixtures/llama-mha-f32'], ['data', 'fixtures/corpus/<domain>.txt'], ['seed', 42], ['trainable', `${formatCount(1_234_567)} (${formatPercent(0.0123)})`], ['peak memory', formatBytes(1.37 * 1024 ** 3)], ['wall time', formatDuration(331)]] },
      { type: 'paragraph', text: 'APEX reaches the vanilla final perplexity after 61% of its tokens in this (synthetic) sample.' },
    ] },
    { title: 'Perplexity', blocks: [
      { type: 'table', caption: 'held-out perplexity per checkpoint', columns: ['checkpoint', 'method', 'perplexity', 'tokens'], rows: [['base', null, '77.37', '0'], ['stage 1', 'APEX full', '10.91', '12,288,000'], ['stage 2', 'APEX full', '9.040', '24,576,000'], ['vanilla', 'vanilla', '9.710', '24,576,000']] },
      { type: 'svg', svg: pplBars, caption: 'Lower is better.' },
    ] },
    { title: 'Training curves', blocks: [{ type: 'image', src: 'loss-curves.svg', alt: 'loss curves' }, { type: 'image', src: 'perplexity-log.svg', alt: 'perplexity' }] },
    { title: 'Advantage assessment', blocks: [
      { type: 'paragraph', text: 'Red: heads that are often among the top-k by activation norm; blue: often among the bottom-k. Outlined: selected P (solid) and N (dashed).' },
      { type: 'image', src: 'heatmap-22x32.svg', alt: 'head heatmap' },
      { type: 'image', src: 'distribution-22x5632.svg', alt: 'channel distribution' },
      { type: 'preformatted', text: summaryTable },
    ], sections: [{ title: 'Files', blocks: [{ type: 'links', items: [{ text: 'analysis.json', href: 'analysis/analysis.json' }, { text: 'stage 1 report', href: 'stages/1/index.html' }] }] }] },
  ],
  footer: 'apex 0.1.0 · sample data from scripts/report-samples.ts',
}));

process.stdout.write(`${written.join('\n')}\n`);
