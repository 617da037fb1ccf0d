/**
 * Per-layer distribution of FFN channel scores: one small histogram per layer on a shared
 * score axis, with the channels selected as P (advantageous) and N (disadvantageous) coloured
 * inside their bins, each layer's median marked, and the P/N thresholds printed at the right.
 * Thousands of channels per layer become at most ~100 bins drawn as three paths per row, so
 * the file stays small and 32 layers stay legible.
 */
import { linearTicks, logTicks, makeScale } from './axis-scale.js';
import { formatCount, formatNumber } from './number-format.js';
import { estimateTextWidth, num, svgDocument, svgHeading, svgText, svgTitle } from './svg-elements.js';

export interface ChannelDistributionInput {
  title: string;
  subtitle?: string;
  /** scores[layer][channel]. Non-finite scores are ignored. */
  scores: readonly ArrayLike<number>[];
  /** Channel indices selected as P, per layer. */
  positive?: readonly ArrayLike<number>[];
  /** Channel indices selected as N, per layer. */
  negative?: readonly ArrayLike<number>[];
  rowAxis?: string;
  rowNames?: readonly string[];
  /** Title of the score axis, e.g. `channel score (rank count)`. */
  valueLabel?: string;
  /** Bar height ∝ count (`linear`, default) or ∝ √count (`sqrt`: shows thin tails next to a spike). */
  heightScale?: 'linear' | 'sqrt';
  /**
   * Score axis. `auto` (default): log when every score is > 0 and they span a factor of 20 or
   * more (activation norms, whose outliers would squash a linear axis), else linear.
   */
  scoreAxis?: 'auto' | 'linear' | 'log';
}

export const DISTRIBUTION_COLORS = { positive: '#b2182b', negative: '#2166ac', other: '#bdbdbd' } as const;

const MAX_BINS = 100;

/**
 * Bin edges over [min, max]. `integer`: bins of whole width centred on integers (a rank count
 * never straddles two bins); `linear`: `MAX_BINS` equal bins; `log`: `MAX_BINS` bins of equal
 * ratio (min > 0).
 */
export function histogramEdges(min: number, max: number, kind: 'integer' | 'linear' | 'log'): number[] {
  if (kind === 'integer') {
    const width = Math.max(1, Math.ceil((max - min + 1) / MAX_BINS));
    const bins = Math.floor((max - min) / width) + 1;
    return Array.from({ length: bins + 1 }, (_, i) => min - 0.5 + i * width);
  }
  if (kind === 'log' && max > min) {
    const ratio = Math.log(max / min);
    return Array.from({ length: MAX_BINS + 1 }, (_, i) => (i === MAX_BINS ? max : min * Math.exp((ratio * i) / MAX_BINS)));
  }
  const span = max > min ? max - min : 1;
  const lo = max > min ? min : min - 0.5;
  return Array.from({ length: MAX_BINS + 1 }, (_, i) => lo + (span * i) / MAX_BINS);
}

export interface LayerHistogram {
  /** Channels per bin, all / selected as P / selected as N. */
  total: number[];
  positive: number[];
  negative: number[];
}

/** Bin index of `v` for ascending `edges`; the last bin includes its upper edge. */
function binOf(v: number, edges: readonly number[]): number {
  let lo = 0;
  let hi = edges.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (v >= (edges[mid] as number)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Counts one layer's channels per bin, split by selection. */
export function layerHistogram(scores: ArrayLike<number>, edges: readonly number[], positive: ArrayLike<number> = [], negative: ArrayLike<number> = []): LayerHistogram {
  const bins = edges.length - 1;
  const result: LayerHistogram = { total: new Array<number>(bins).fill(0), positive: new Array<number>(bins).fill(0), negative: new Array<number>(bins).fill(0) };
  const bin = (v: number) => binOf(v, edges);
  for (let i = 0; i < scores.length; i += 1) {
    const v = scores[i] as number;
    if (Number.isFinite(v)) (result.total[bin(v)] as number) += 1;
  }
  for (const [indices, counts] of [[positive, result.positive], [negative, result.negative]] as const) {
    for (let j = 0; j < indices.length; j += 1) {
      const v = scores[indices[j] as number] as number;
      if (Number.isFinite(v)) counts[bin(v)] = (counts[bin(v)] as number) + 1;
    }
  }
  return result;
}

const minOf = (values: readonly number[]) => values.reduce((a, b) => (b < a ? b : a), Infinity);
const maxOf = (values: readonly number[]) => values.reduce((a, b) => (b > a ? b : a), -Infinity);

function median(values: number[]): number {
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Step outline of a histogram as one closed path (nothing for all-zero counts). */
function stepPath(counts: readonly number[], xs: readonly number[], baseline: number, height: (c: number) => number): string {
  const parts: string[] = [];
  let open = false;
  for (let b = 0; b < counts.length; b += 1) {
    const c = counts[b] as number;
    if (c > 0) {
      if (!open) parts.push(`M${num(xs[b] as number)} ${num(baseline)}`);
      parts.push(`V${num(baseline - height(c))}H${num(xs[b + 1] as number)}`);
      open = true;
    } else if (open) {
      parts.push(`V${num(baseline)}Z`);
      open = false;
    }
  }
  if (open) parts.push(`V${num(baseline)}Z`);
  return parts.join('');
}

export function renderChannelDistributionSvg(input: ChannelDistributionInput): string {
  const rows = input.scores.length;
  for (const [name, sets] of [['positive', input.positive], ['negative', input.negative]] as const) {
    if (sets && sets.length !== rows) throw new RangeError(`${name}: ${sets.length} layers of selections for ${rows} layers of scores`);
    sets?.forEach((set, r) => {
      const n = (input.scores[r] as ArrayLike<number>).length;
      for (let j = 0; j < set.length; j += 1) {
        const c = set[j] as number;
        if (!Number.isInteger(c) || c < 0 || c >= n) throw new RangeError(`${name}: channel ${c} in layer ${r} is outside 0…${n - 1}`);
      }
    });
  }
  const rowAxis = input.rowAxis ?? 'layer';
  const rowName = (r: number) => input.rowNames?.[r] ?? String(r);

  let min = Infinity;
  let max = -Infinity;
  let integerValued = true;
  const finiteRows = input.scores.map((row) => {
    const kept: number[] = [];
    for (let i = 0; i < row.length; i += 1) {
      const v = row[i] as number;
      if (!Number.isFinite(v)) continue;
      kept.push(v);
      if (v < min) min = v;
      if (v > max) max = v;
      if (!Number.isInteger(v)) integerValued = false;
    }
    return kept;
  });
  if (min > max) [min, max] = [0, 1];
  const axisKind = input.scoreAxis ?? 'auto';
  const log = min > 0 && (axisKind === 'log' || (axisKind === 'auto' && max / min >= 20));
  const edges = histogramEdges(min, max, log ? 'log' : integerValued ? 'integer' : 'linear');
  const [lo, hi] = [edges[0] as number, edges[edges.length - 1] as number];
  const axis = log ? logTicks(lo, hi) : linearTicks(lo, hi, 6);

  // Layout.
  const rowH = Math.max(14, Math.min(30, Math.floor(440 / Math.max(rows, 1))));
  const plotW = 600;
  const rowLabelWidth = Math.max(...Array.from({ length: rows }, (_, r) => estimateTextWidth(rowName(r), 11)), 8);
  const left = 26 + rowLabelWidth + 6;
  const thresholdColW = 56;
  const width = left + plotW + 16 + thresholdColW * 2 + 16;
  const heading = svgHeading(12, input.title, input.subtitle, width - 24);
  const legendY = heading.height + 4;
  const top = legendY + 30;
  const plotH = rowH * rows;
  const x = makeScale(axis.domain, [left, left + plotW], log);
  const xs = edges.map(x);
  const sqrt = input.heightScale === 'sqrt';
  const body: string[] = [...heading.elements];

  // Legend.
  const swatches: [string, string][] = [[DISTRIBUTION_COLORS.positive, 'P (advantageous)'], [DISTRIBUTION_COLORS.negative, 'N (disadvantageous)'], [DISTRIBUTION_COLORS.other, 'other channels']];
  let lx = left;
  body.push('<g class="legend">');
  for (const [color, label] of swatches) {
    body.push(`<rect x="${num(lx)}" y="${num(legendY + 2)}" width="12" height="12" fill="${color}"/>`, svgText(lx + 17, legendY + 12, label, { size: 11 }));
    lx += 17 + estimateTextWidth(label, 11) + 18;
  }
  body.push(svgText(lx, legendY + 12, `| median · bar height ∝ ${sqrt ? '√count' : 'count'} (per layer)`, { size: 11, fill: '#555555' }));
  body.push('</g>');

  // Grid lines and the score axis.
  body.push('<g class="grid" stroke="#e6e6e6" stroke-width="1">');
  for (const t of axis.ticks) body.push(`<line x1="${num(x(t))}" y1="${num(top)}" x2="${num(x(t))}" y2="${num(top + plotH)}"${t === 0 ? ' stroke="#9a9a9a"' : ''}/>`);
  body.push('</g>');
  body.push(`<g class="axis" font-size="11" fill="#333333">`);
  axis.ticks.forEach((t, i) => {
    body.push(`<line x1="${num(x(t))}" y1="${num(top + plotH)}" x2="${num(x(t))}" y2="${num(top + plotH + 4)}" stroke="#333333"/>`);
    body.push(svgText(x(t), top + plotH + 16, axis.labels[i] as string, { anchor: 'middle' }));
  });
  body.push('</g>');
  body.push(svgText(left + plotW / 2, top + plotH + 34, `${input.valueLabel ?? 'channel score'}${log ? ' (log scale)' : ''}`, { anchor: 'middle', size: 12, className: 'axis-title' }));
  body.push(svgText(14, top + plotH / 2, rowAxis, { anchor: 'middle', rotate: -90, size: 12, className: 'axis-title' }));
  const thresholdX = left + plotW + 16;
  body.push(svgText(thresholdX + thresholdColW - 6, top - 6, 'P ≥', { anchor: 'end', size: 11, weight: 'bold', fill: DISTRIBUTION_COLORS.positive }));
  body.push(svgText(thresholdX + 2 * thresholdColW - 6, top - 6, 'N ≤', { anchor: 'end', size: 11, weight: 'bold', fill: DISTRIBUTION_COLORS.negative }));

  // One histogram per layer.
  for (let r = 0; r < rows; r += 1) {
    const scores = input.scores[r] as ArrayLike<number>;
    const positive = input.positive?.[r] ?? [];
    const negative = input.negative?.[r] ?? [];
    const hist = layerHistogram(scores, edges, positive, negative);
    const rowTop = top + r * rowH;
    const baseline = rowTop + rowH - 1.5;
    const barMax = rowH - 3.5;
    const peak = Math.max(1, ...hist.total);
    const height = (c: number) => (sqrt ? Math.sqrt(c / peak) : c / peak) * barMax;
    const finite = finiteRows[r] as number[];
    const pick = (set: ArrayLike<number>) => Array.from(set, (i) => scores[i] as number).filter(Number.isFinite);
    const pScores = pick(positive);
    const nScores = pick(negative);
    const pFrom = pScores.length ? minOf(pScores) : undefined;
    const nTo = nScores.length ? maxOf(nScores) : undefined;
    const med = finite.length ? median(finite) : undefined;
    const summary = finite.length
      ? `min ${formatNumber(minOf(finite))}, median ${formatNumber(med as number)}, max ${formatNumber(maxOf(finite))}`
      : 'no finite scores';
    const tooltip = `${rowAxis} ${rowName(r)}: ${formatCount(scores.length)} channels; ${summary}` +
      (pFrom !== undefined ? `; P: ${formatCount(pScores.length)} channels ≥ ${formatNumber(pFrom)}` : '') +
      (nTo !== undefined ? `; N: ${formatCount(nScores.length)} channels ≤ ${formatNumber(nTo)}` : '');
    body.push(`<g class="layer-row" data-layer="${r}" data-positive="${pScores.length}" data-negative="${nScores.length}">`);
    body.push(svgTitle(tooltip));
    body.push(`<rect x="${num(left)}" y="${num(rowTop)}" width="${plotW}" height="${rowH}" fill="#000000" fill-opacity="0"/>`);
    body.push(`<line x1="${num(left)}" y1="${num(baseline)}" x2="${num(left + plotW)}" y2="${num(baseline)}" stroke="#d0d0d0" stroke-width="0.5"/>`);
    body.push(`<path class="bins-all" d="${stepPath(hist.total, xs, baseline, height)}" fill="${DISTRIBUTION_COLORS.other}"/>`);
    const pPath = stepPath(hist.positive, xs, baseline, height);
    if (pPath) body.push(`<path class="bins-p" d="${pPath}" fill="${DISTRIBUTION_COLORS.positive}"/>`);
    const nPath = stepPath(hist.negative, xs, baseline, height);
    if (nPath) body.push(`<path class="bins-n" d="${nPath}" fill="${DISTRIBUTION_COLORS.negative}"/>`);
    if (med !== undefined) {
      body.push(`<line class="median" x1="${num(x(med))}" y1="${num(rowTop + 1)}" x2="${num(x(med))}" y2="${num(baseline + 1)}" stroke="#000000" stroke-width="1.5"/>`);
    }
    body.push(svgText(left - 6, rowTop + rowH / 2 + 4, rowName(r), { anchor: 'end', size: 11, fill: '#333333' }));
    if (pFrom !== undefined) body.push(svgText(thresholdX + thresholdColW - 6, rowTop + rowH / 2 + 4, formatNumber(pFrom), { anchor: 'end', size: 11 }));
    if (nTo !== undefined) body.push(svgText(thresholdX + 2 * thresholdColW - 6, rowTop + rowH / 2 + 4, formatNumber(nTo), { anchor: 'end', size: 11 }));
    body.push('</g>');
  }

  return svgDocument({ width, height: top + plotH + 46, title: input.title, body });
}
