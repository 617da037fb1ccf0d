/**
 * Line chart for training curves: several series (train loss, eval loss or perplexity, APEX
 * vs vanilla), x = step or tokens, optional log y, dashed verticals at stage boundaries, a
 * legend at the right. Long series are thinned per pixel column (first/min/max/last kept) so
 * a 100k-step curve stays a small file without losing its spikes.
 */
import { linearTicks, logTicks, makeScale, type AxisTicks } from './axis-scale.js';
import { categoricalColor } from './color-scale.js';
import { formatNumber } from './number-format.js';
import { estimateTextWidth, fitText, num, svgDocument, svgHeading, svgText, svgTitle } from './svg-elements.js';

export interface LinePoint {
  x: number;
  y: number;
}

export interface LineSeries {
  name: string;
  points: readonly LinePoint[];
  /** Defaults to the categorical palette by series position. */
  color?: string;
  dashed?: boolean;
  /** Draw a dot (with a tooltip) at every point: for sparse series such as periodic evals. */
  markers?: boolean;
  /**
   * Exponential-moving-average weight in [0, 1) for noisy series such as per-step train
   * loss: the raw line is drawn faint and the smoothed one on top (as TensorBoard does).
   */
  smoothing?: number;
}

export interface StageBoundary {
  x: number;
  label?: string;
}

export interface LineChartInput {
  title: string;
  subtitle?: string;
  series: readonly LineSeries[];
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  /** Fixes the y range (e.g. to cut off the first steps' huge loss). Points outside are clipped. */
  yDomain?: [number, number];
  stageBoundaries?: readonly StageBoundary[];
  width?: number;
  height?: number;
}

/**
 * Keeps, per pixel-column bucket of x, the first, lowest, highest and last point (in x order),
 * so the drawn polyline looks the same as the full one. Series at most `4 × buckets` long are
 * returned unchanged.
 */
export function thinSeries(points: readonly LinePoint[], buckets: number): LinePoint[] {
  if (points.length <= 4 * buckets) return [...points];
  const x0 = points[0]?.x ?? 0;
  const x1 = points[points.length - 1]?.x ?? 0;
  const span = x1 - x0 || 1;
  const kept: LinePoint[] = [];
  let start = 0;
  while (start < points.length) {
    const bucket = Math.min(buckets - 1, Math.floor((((points[start] as LinePoint).x - x0) / span) * buckets));
    let end = start;
    let lo = start;
    let hi = start;
    while (end < points.length && Math.min(buckets - 1, Math.floor((((points[end] as LinePoint).x - x0) / span) * buckets)) === bucket) {
      if ((points[end] as LinePoint).y < (points[lo] as LinePoint).y) lo = end;
      if ((points[end] as LinePoint).y > (points[hi] as LinePoint).y) hi = end;
      end += 1;
    }
    for (const i of [...new Set([start, lo, hi, end - 1])].sort((a, b) => a - b)) kept.push(points[i] as LinePoint);
    start = end;
  }
  return kept;
}

/** Debiased exponential moving average of y (weight = share of the previous average). */
export function smoothSeries(points: readonly LinePoint[], weight: number): LinePoint[] {
  let average = 0;
  return points.map((p, i) => {
    average = average * weight + (1 - weight) * p.y;
    return { x: p.x, y: average / (1 - weight ** (i + 1)) };
  });
}

export function renderLineChartSvg(input: LineChartInput): string {
  const usable = (p: LinePoint) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!input.logY || p.y > 0);
  const all = input.series.flatMap((s) => s.points.filter(usable));
  const boundaries = input.stageBoundaries ?? [];
  const xsAll = [...all.map((p) => p.x), ...boundaries.map((b) => b.x)];
  const xMin = xsAll.length ? xsAll.reduce((a, b) => Math.min(a, b)) : 0;
  const xMax = xsAll.length ? xsAll.reduce((a, b) => Math.max(a, b)) : 1;
  const yData: [number, number] = all.length
    ? [all.reduce((a, p) => Math.min(a, p.y), Infinity), all.reduce((a, p) => Math.max(a, p.y), -Infinity)]
    : input.logY ? [1, 10] : [0, 1];
  const [yLo, yHi] = input.yDomain ?? yData;
  let yAxis: AxisTicks;
  if (input.logY) {
    const pad = yHi > yLo ? (yHi / yLo) ** 0.04 : 2;
    yAxis = logTicks(yLo / pad, yHi * pad);
  } else {
    yAxis = linearTicks(yLo, yHi, 6);
  }
  const xAxis = linearTicks(xMin, xMax, 7);

  // Layout.
  const width = input.width ?? 760;
  const height = input.height ?? 400;
  const legendFont = 11;
  const legendNames = [...input.series.map((s) => s.name), ...(boundaries.length ? ['stage boundary'] : [])];
  const legendW = Math.min(220, Math.max(80, ...legendNames.map((name) => estimateTextWidth(name, legendFont))) + 34);
  const yLabelW = Math.max(...yAxis.labels.map((l) => estimateTextWidth(l, 11)), 10);
  const heading = svgHeading(12, input.title, input.subtitle, width - 24);
  const left = 30 + yLabelW + 8;
  const right = width - legendW - 16;
  const top = heading.height + 14;
  const bottom = height - 46;
  const x = makeScale(xAxis.domain, [left, right]);
  const y = makeScale(yAxis.domain, [bottom, top], input.logY);
  const body: string[] = [...heading.elements];

  // Grid, frame, ticks.
  body.push('<g class="grid" stroke="#e6e6e6" stroke-width="1">');
  for (const t of yAxis.ticks) body.push(`<line x1="${num(left)}" y1="${num(y(t))}" x2="${num(right)}" y2="${num(y(t))}"/>`);
  for (const t of xAxis.ticks) body.push(`<line x1="${num(x(t))}" y1="${num(top)}" x2="${num(x(t))}" y2="${num(bottom)}"/>`);
  body.push('</g>');
  body.push(`<rect x="${num(left)}" y="${num(top)}" width="${num(right - left)}" height="${num(bottom - top)}" fill="none" stroke="#888888" stroke-width="1"/>`);
  body.push('<g class="axis" font-size="11" fill="#333333">');
  yAxis.ticks.forEach((t, i) => body.push(svgText(left - 6, y(t) + 4, yAxis.labels[i] as string, { anchor: 'end' })));
  xAxis.ticks.forEach((t, i) => body.push(svgText(x(t), bottom + 16, xAxis.labels[i] as string, { anchor: 'middle' })));
  body.push('</g>');
  body.push(svgText(left + (right - left) / 2, bottom + 36, input.xLabel, { anchor: 'middle', size: 12, className: 'axis-title' }));
  body.push(svgText(14, top + (bottom - top) / 2, input.yLabel + (input.logY ? ' (log scale)' : ''), { anchor: 'middle', rotate: -90, size: 12, className: 'axis-title' }));

  // Stage boundaries.
  body.push('<g class="stage-boundaries">');
  for (const b of boundaries) {
    const bx = x(b.x);
    body.push(`<line class="stage-boundary" x1="${num(bx)}" y1="${num(top)}" x2="${num(bx)}" y2="${num(bottom)}" stroke="#555555" stroke-width="1.2" stroke-dasharray="6 4"/>`);
    if (b.label) body.push(svgText(bx + 4, top + 12, b.label, { size: 10, fill: '#555555' }));
  }
  body.push('</g>');

  // Series. Points outside the y range (a fixed yDomain) are clamped to the frame so the
  // line still shows where it leaves; non-finite points break the line.
  const [dLo, dHi] = yAxis.domain;
  const clampY = (v: number) => y(Math.min(dHi, Math.max(dLo, v)));
  const buckets = Math.max(1, Math.round(right - left));
  input.series.forEach((s, i) => {
    const color = s.color ?? categoricalColor(i);
    const segments: LinePoint[][] = [[]];
    for (const p of s.points) {
      if (usable(p)) (segments[segments.length - 1] as LinePoint[]).push(p);
      else if ((segments[segments.length - 1] as LinePoint[]).length) segments.push([]);
    }
    const pathOf = (segs: LinePoint[][]) => segs
      .filter((seg) => seg.length)
      .map((seg) => thinSeries(seg, buckets).map((p, j) => `${j ? 'L' : 'M'}${num(x(p.x))} ${num(clampY(p.y))}`).join(''))
      .join('');
    const smoothing = s.smoothing ?? 0;
    const d = pathOf(smoothing > 0 ? segments.map((seg) => smoothSeries(seg, smoothing)) : segments);
    const dash = s.dashed ? ' stroke-dasharray="7 4"' : '';
    body.push(`<g class="series" data-series="${i}">`);
    body.push(svgTitle(smoothing > 0 ? `${s.name} (moving average ${smoothing}; raw values faint)` : s.name));
    if (smoothing > 0) {
      const raw = pathOf(segments);
      if (raw) body.push(`<path class="raw" d="${raw}" fill="none" stroke="${color}" stroke-opacity="0.25" stroke-width="1"/>`);
    }
    if (d) body.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8" stroke-linejoin="round"${dash}/>`);
    if (s.markers) {
      for (const p of s.points.filter(usable)) {
        body.push(`<circle class="point" cx="${num(x(p.x))}" cy="${num(clampY(p.y))}" r="3" fill="${color}" stroke="#ffffff" stroke-width="1">${svgTitle(`${s.name} @ ${formatNumber(p.x)}: ${formatNumber(p.y)}`)}</circle>`);
      }
    }
    body.push('</g>');
  });
  if (!all.length) body.push(svgText((left + right) / 2, (top + bottom) / 2, 'no data', { anchor: 'middle', size: 13, fill: '#888888' }));

  // Legend.
  const lx = right + 16;
  body.push('<g class="legend">');
  input.series.forEach((s, i) => {
    const ly = top + 8 + i * 20;
    const color = s.color ?? categoricalColor(i);
    const dash = s.dashed ? ' stroke-dasharray="7 4"' : '';
    body.push(`<line x1="${num(lx)}" y1="${num(ly)}" x2="${num(lx + 24)}" y2="${num(ly)}" stroke="${color}" stroke-width="2.2"${dash}/>`);
    if (s.markers) body.push(`<circle cx="${num(lx + 12)}" cy="${num(ly)}" r="3" fill="${color}" stroke="#ffffff" stroke-width="1"/>`);
    body.push(svgText(lx + 30, ly + 4, fitText(s.name, legendW - 34, legendFont), { size: legendFont }));
  });
  if (boundaries.length) {
    const ly = top + 8 + input.series.length * 20;
    body.push(`<line x1="${num(lx)}" y1="${num(ly)}" x2="${num(lx + 24)}" y2="${num(ly)}" stroke="#555555" stroke-width="1.2" stroke-dasharray="6 4"/>`);
    body.push(svgText(lx + 30, ly + 4, 'stage boundary', { size: legendFont }));
  }
  body.push('</g>');

  return svgDocument({ width, height, title: input.title, body });
}
