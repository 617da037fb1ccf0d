/**
 * Grouped vertical bar chart: one group per category (a stage, a module type), one bar per
 * series (a method) inside it, e.g. perplexity per stage for APEX and vanilla or effective
 * rank per module. Bars start at 0; values are printed above bars when there is room, and
 * category labels turn diagonal when they would not fit under their group.
 */
import { linearTicks, makeScale } from './axis-scale.js';
import { categoricalColor } from './color-scale.js';
import { formatNumber } from './number-format.js';
import { estimateTextWidth, fitText, num, svgDocument, svgHeading, svgText, svgTitle } from './svg-elements.js';

export interface BarSeries {
  name: string;
  /** One value per category; null = no bar. */
  values: readonly (number | null)[];
  color?: string;
}

export interface BarChartInput {
  title: string;
  subtitle?: string;
  categories: readonly string[];
  series: readonly BarSeries[];
  yLabel: string;
  /** Axis title under the categories, e.g. `stage`. */
  xLabel?: string;
  /** Formats the value printed over a bar and in its tooltip (default: 4 significant digits). */
  formatValue?: (v: number) => string;
  width?: number;
  height?: number;
}

export function renderBarChartSvg(input: BarChartInput): string {
  const nCat = input.categories.length;
  const nSer = input.series.length;
  input.series.forEach((s) => {
    if (s.values.length !== nCat) throw new RangeError(`bar series '${s.name}' has ${s.values.length} values for ${nCat} categories`);
  });
  const format = input.formatValue ?? ((v: number) => formatNumber(v));
  const values = input.series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const yAxis = linearTicks(Math.min(0, ...values), Math.max(0, ...values, values.length ? 0 : 1), 6);

  // Layout.
  const legendW = nSer > 1 ? Math.min(220, Math.max(...input.series.map((s) => estimateTextWidth(s.name, 11)))) + 30 : 0;
  const yLabelW = Math.max(...yAxis.labels.map((l) => estimateTextWidth(l, 11)), 10);
  const width = input.width ?? Math.max(420, Math.min(1000, 160 + legendW + nCat * (nSer * 26 + 24)));
  const heading = svgHeading(12, input.title, input.subtitle, width - 24);
  const right = width - (legendW ? legendW + 16 : 12);
  let left = 30 + yLabelW + 8;
  let groupW = (right - left) / Math.max(nCat, 1);
  const longest = Math.max(...input.categories.map((c) => estimateTextWidth(c, 11)), 0);
  const diagonal = longest > groupW - 4;
  if (diagonal && nCat > 0) {
    // The first label hangs left of its group by cos(40°) of its length: make room for it.
    const firstReach = Math.min(estimateTextWidth(input.categories[0] as string, 11), 120 / 0.72) * Math.cos((40 * Math.PI) / 180);
    left = Math.max(left, 8 + firstReach - groupW / 2);
    groupW = (right - left) / nCat;
  }
  const barW = Math.min(48, (groupW * 0.8) / Math.max(nSer, 1));
  const categorySpace = diagonal ? Math.min(120, longest * 0.72) + 14 : 18;
  const height = input.height ?? 380 + (diagonal ? categorySpace - 18 : 0);
  const top = heading.height + 16;
  const bottom = height - categorySpace - (input.xLabel ? 26 : 8);
  const y = makeScale(yAxis.domain, [bottom, top]);
  const showValues = barW >= 22;
  const body: string[] = [...heading.elements];

  body.push('<g class="grid" stroke="#e6e6e6" stroke-width="1">');
  for (const t of yAxis.ticks) body.push(`<line x1="${num(left)}" y1="${num(y(t))}" x2="${num(right)}" y2="${num(y(t))}"${t === 0 ? ' stroke="#555555"' : ''}/>`);
  body.push('</g>');
  body.push('<g class="axis" font-size="11" fill="#333333">');
  yAxis.ticks.forEach((t, i) => body.push(svgText(left - 6, y(t) + 4, yAxis.labels[i] as string, { anchor: 'end' })));
  input.categories.forEach((c, i) => {
    const cx = left + groupW * (i + 0.5);
    if (diagonal) body.push(svgText(cx, bottom + 14, fitText(c, 120 / 0.72, 11), { anchor: 'end', rotate: -40 }));
    else body.push(svgText(cx, bottom + 15, c, { anchor: 'middle' }));
  });
  body.push('</g>');
  body.push(svgText(14, top + (bottom - top) / 2, input.yLabel, { anchor: 'middle', rotate: -90, size: 12, className: 'axis-title' }));
  if (input.xLabel) body.push(svgText(left + (right - left) / 2, height - 10, input.xLabel, { anchor: 'middle', size: 12, className: 'axis-title' }));

  const zero = y(0);
  input.series.forEach((s, j) => {
    const color = s.color ?? categoricalColor(j);
    body.push(`<g class="series" data-series="${j}" fill="${color}">`);
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      const bx = left + groupW * (i + 0.5) - (barW * nSer) / 2 + j * barW;
      const by = y(v);
      const tooltip = `${s.name}, ${input.categories[i]}: ${format(v)}`;
      body.push(`<rect class="bar" x="${num(bx + 1)}" y="${num(Math.min(by, zero))}" width="${num(barW - 2)}" height="${num(Math.abs(zero - by))}">${svgTitle(tooltip)}</rect>`);
      if (showValues) {
        const ty = v >= 0 ? by - 4 : by + 12;
        body.push(svgText(bx + barW / 2, ty, fitText(format(v), barW + 8, 10), { anchor: 'middle', size: 10, fill: '#333333' }));
      }
    });
    body.push('</g>');
  });

  if (nSer > 1) {
    const lx = right + 16;
    body.push('<g class="legend">');
    input.series.forEach((s, j) => {
      const ly = top + 4 + j * 20;
      body.push(`<rect x="${num(lx)}" y="${num(ly)}" width="12" height="12" fill="${s.color ?? categoricalColor(j)}"/>`);
      body.push(svgText(lx + 18, ly + 10, fitText(s.name, legendW - 30, 11), { size: 11 }));
    });
    body.push('</g>');
  }

  return svgDocument({ width, height, title: input.title, body });
}
