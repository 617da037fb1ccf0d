/**
 * Per-layer × per-unit score heatmap (rows = layers, columns = attention heads or KV groups)
 * with a colour legend, per-cell tooltips and outlines on the selected P and N units. Rank
 * counts use a diverging scale centred on 0, norms a sequential one. Cell size adapts so that
 * 32 × 32 and 5 × 4 grids both read well; small grids also print the values in the cells.
 */
import { DIVERGING_STOPS, SEQUENTIAL_STOPS, divergingColor, interpolateStops, sequentialColor, textColorOn } from './color-scale.js';
import { formatNumber } from './number-format.js';
import { estimateTextWidth, fitText, num, svgDocument, svgHeading, svgText, svgTitle } from './svg-elements.js';

export interface HeatmapInput {
  title: string;
  subtitle?: string;
  /** values[row][column], e.g. [layer][head]; every row has the same length. NaN = missing. */
  values: readonly ArrayLike<number>[];
  /**
   * `diverging`: centred on 0 over ±max|v| (rank counts); `sequential`: min…max (norms);
   * `sequential-log`: min…max on a log colour axis (norms with outliers; values must be > 0).
   */
  scale: 'diverging' | 'sequential' | 'sequential-log';
  /** Overrides the colour domain: [min, max] (sequential) or [-m, m] (diverging uses max |·|). */
  domain?: [number, number];
  /** Axis names, e.g. `layer` and `head` or `KV group`. */
  rowAxis?: string;
  columnAxis?: string;
  rowNames?: readonly string[];
  columnNames?: readonly string[];
  /** What a value is, shown over the colour legend, e.g. `rank count`. */
  valueLabel?: string;
  /** Selected advantageous units per row (column indices). */
  positive?: readonly (readonly number[])[];
  /** Selected disadvantageous units per row (column indices). */
  negative?: readonly (readonly number[])[];
}

const MISSING_FILL = '#d0d0d0';
const LEGEND_STEPS = 64;

function checkSelection(name: string, sets: readonly (readonly number[])[] | undefined, rows: number, cols: number): void {
  if (!sets) return;
  if (sets.length !== rows) throw new RangeError(`${name}: ${sets.length} rows of selections for ${rows} rows of values`);
  sets.forEach((set, r) => {
    for (const c of set) {
      if (!Number.isInteger(c) || c < 0 || c >= cols) throw new RangeError(`${name}: column ${c} in row ${r} is outside 0…${cols - 1}`);
    }
  });
}

/** Label every `step`-th index, step from 1, 2, 5, 10, … so labels do not overlap. */
function labelStep(cellSize: number, needed: number): number {
  for (const step of [1, 2, 5, 10, 20, 50, 100]) if (step * cellSize >= needed) return step;
  return 200;
}

export function renderHeatmapSvg(input: HeatmapInput): string {
  const rows = input.values.length;
  const cols = rows > 0 ? (input.values[0] as ArrayLike<number>).length : 0;
  input.values.forEach((row, r) => {
    if (row.length !== cols) throw new RangeError(`heatmap row ${r} has ${row.length} values, expected ${cols}`);
  });
  checkSelection('positive', input.positive, rows, cols);
  checkSelection('negative', input.negative, rows, cols);
  const rowAxis = input.rowAxis ?? 'layer';
  const columnAxis = input.columnAxis ?? 'head';
  const rowName = (r: number) => input.rowNames?.[r] ?? String(r);
  const colName = (c: number) => input.columnNames?.[c] ?? String(c);

  const finite: number[] = [];
  const usable = (v: number) => Number.isFinite(v) && (input.scale !== 'sequential-log' || v > 0);
  for (const row of input.values) for (let c = 0; c < cols; c += 1) if (usable(row[c] as number)) finite.push(row[c] as number);
  const dataMin = finite.reduce((a, b) => Math.min(a, b), finite[0] ?? 0);
  const dataMax = finite.reduce((a, b) => Math.max(a, b), finite[0] ?? 0);
  const maxAbs = input.domain ? Math.max(Math.abs(input.domain[0]), Math.abs(input.domain[1])) : Math.max(Math.abs(dataMin), Math.abs(dataMax));
  const [lo, hi] = input.scale === 'diverging' ? [-maxAbs, maxAbs] : (input.domain ?? [dataMin, dataMax]);
  const colorOf = (v: number) => {
    if (!usable(v)) return MISSING_FILL;
    if (input.scale === 'diverging') return divergingColor(v, maxAbs);
    if (input.scale === 'sequential-log') return sequentialColor(Math.log10(v), Math.log10(lo), Math.log10(hi));
    return sequentialColor(v, lo, hi);
  };

  // Layout: square cells sized for a ~640 px grid, clamped so huge grids stay readable and
  // tiny ones do not balloon.
  const cell = Math.max(12, Math.min(48, Math.floor(640 / Math.max(cols, rows, 1))));
  const tickSize = cell >= 16 ? 11 : 10;
  const gridW = cell * cols;
  const gridH = cell * rows;
  const rowLabelWidth = Math.max(...Array.from({ length: rows }, (_, r) => estimateTextWidth(rowName(r), tickSize)), 8);
  const left = 26 + rowLabelWidth + 6;
  const legendX0 = left + gridW + 24;
  const legendW = 170;
  const width = Math.max(legendX0 + legendW, 360);
  const heading = svgHeading(12, input.title, input.subtitle, width - 24);
  const top = heading.height + 8;
  const showValues = cell >= 34 && finite.every((v) => formatNumber(v, 3).length <= 5);
  const valueSize = Math.min(13, Math.max(9, Math.round(cell * 0.28)));

  const body: string[] = [...heading.elements];

  // Cells.
  const positive = input.positive?.map((s) => new Set(s));
  const negative = input.negative?.map((s) => new Set(s));
  const cells: string[] = ['<g class="cells" stroke="#ffffff" stroke-width="0.5">'];
  const values: string[] = [`<g class="values" font-size="${valueSize}" text-anchor="middle">`];
  for (let r = 0; r < rows; r += 1) {
    const row = input.values[r] as ArrayLike<number>;
    for (let c = 0; c < cols; c += 1) {
      const v = row[c] as number;
      const fill = colorOf(v);
      const tag = positive?.[r]?.has(c) ? ' (P, advantageous)' : negative?.[r]?.has(c) ? ' (N, disadvantageous)' : '';
      const tooltip = `${rowAxis} ${rowName(r)}, ${columnAxis} ${colName(c)}: ${usable(v) ? formatNumber(v) : 'n/a'}${tag}`;
      const x = left + c * cell;
      const y = top + r * cell;
      cells.push(
        `<rect class="cell" data-row="${r}" data-col="${c}" x="${num(x)}" y="${num(y)}" width="${cell}" height="${cell}" fill="${fill}">${svgTitle(tooltip)}</rect>`,
      );
      if (showValues && usable(v)) {
        values.push(`<text x="${num(x + cell / 2)}" y="${num(y + cell / 2 + valueSize * 0.35)}" fill="${textColorOn(fill)}">${formatNumber(v, 3)}</text>`);
      }
    }
  }
  cells.push('</g>');
  values.push('</g>');
  body.push(...cells);
  if (showValues) body.push(...values);

  // Selection outlines: a dark frame with a white inner line reads on every fill colour;
  // N is dashed so the two kinds differ in greyscale too. pointer-events none keeps the
  // cell tooltips reachable.
  const outline = (kind: 'p' | 'n', x: number, y: number, s: number) => {
    const dash = kind === 'n' ? ' stroke-dasharray="3 2"' : '';
    const outer = `<rect x="${num(x + 1.25)}" y="${num(y + 1.25)}" width="${num(s - 2.5)}" height="${num(s - 2.5)}" stroke="#000000" stroke-width="2.5"${dash}/>`;
    const inner = `<rect x="${num(x + 3)}" y="${num(y + 3)}" width="${num(s - 6)}" height="${num(s - 6)}" stroke="#ffffff" stroke-width="1"/>`;
    return outer + inner;
  };
  const marker = (kind: 'p' | 'n', r: number, c: number) =>
    `<g class="marker-${kind}" data-row="${r}" data-col="${c}">${outline(kind, left + c * cell, top + r * cell, cell)}</g>`;
  const markers: string[] = ['<g class="markers" fill="none" pointer-events="none">'];
  for (let r = 0; r < rows; r += 1) {
    for (const c of [...(input.positive?.[r] ?? [])].sort((a, b) => a - b)) markers.push(marker('p', r, c));
    for (const c of [...(input.negative?.[r] ?? [])].sort((a, b) => a - b)) markers.push(marker('n', r, c));
  }
  markers.push('</g>');
  body.push(...markers);

  // Axes: row labels left, column labels below, axis names.
  const rowStep = labelStep(cell, tickSize + 2);
  const maxColLabel = Math.max(...Array.from({ length: cols }, (_, c) => estimateTextWidth(colName(c), tickSize)), 8);
  const colStep = labelStep(cell, maxColLabel + 4);
  const axis: string[] = [`<g class="axis" font-size="${tickSize}" fill="#333333">`];
  for (let r = 0; r < rows; r += rowStep) axis.push(svgText(left - 6, top + r * cell + cell / 2 + tickSize * 0.35, rowName(r), { anchor: 'end' }));
  for (let c = 0; c < cols; c += colStep) axis.push(svgText(left + c * cell + cell / 2, top + gridH + tickSize + 4, colName(c), { anchor: 'middle' }));
  axis.push('</g>');
  body.push(...axis);
  body.push(svgText(14, top + gridH / 2, rowAxis, { anchor: 'middle', rotate: -90, size: 12, className: 'axis-title' }));
  body.push(svgText(left + gridW / 2, top + gridH + tickSize + 22, columnAxis, { anchor: 'middle', size: 12, className: 'axis-title' }));

  // Colour legend: a stepped bar (no gradients, so no ids), scale endpoints, data range.
  const barH = Math.max(120, Math.min(220, gridH));
  const barX = legendX0;
  const barY = top + 16;
  const legend: string[] = ['<g class="legend">'];
  legend.push(svgText(barX, top + 6, fitText(input.valueLabel ?? 'value', legendW, 11), { size: 11, weight: 'bold' }));
  const stops = input.scale === 'diverging' ? DIVERGING_STOPS : SEQUENTIAL_STOPS;
  for (let i = 0; i < LEGEND_STEPS; i += 1) {
    const t = 1 - (i + 0.5) / LEGEND_STEPS;
    const y = barY + (i * barH) / LEGEND_STEPS;
    legend.push(`<rect class="legend-step" x="${num(barX)}" y="${num(y)}" width="14" height="${num(barH / LEGEND_STEPS + 0.5)}" fill="${interpolateStops(stops, t)}"/>`);
  }
  legend.push(`<rect x="${num(barX)}" y="${num(barY)}" width="14" height="${num(barH)}" fill="none" stroke="#888888" stroke-width="0.5"/>`);
  const legendTick = (y: number, label: string, cls: string) =>
    `<line x1="${num(barX + 14)}" y1="${num(y)}" x2="${num(barX + 18)}" y2="${num(y)}" stroke="#333333"/>` +
    svgText(barX + 21, y + 4, label, { size: 11, className: cls });
  legend.push(legendTick(barY, formatNumber(hi, 4), 'legend-max'));
  if (input.scale === 'diverging') legend.push(legendTick(barY + barH / 2, '0', 'legend-zero'));
  if (input.scale === 'sequential-log') legend.push(legendTick(barY + barH / 2, formatNumber(Math.sqrt(lo * hi), 3), 'legend-mid'));
  legend.push(legendTick(barY + barH, formatNumber(lo, 4), 'legend-min'));
  let y = barY + barH + 20;
  if (input.scale === 'sequential-log') {
    legend.push(svgText(barX, y, 'log colour scale', { size: 10, fill: '#555555' }));
    y += 13;
  }
  if (input.scale === 'diverging' || input.domain) {
    legend.push(svgText(barX, y, `data min ${formatNumber(dataMin)}`, { size: 10, fill: '#555555' }));
    legend.push(svgText(barX, y + 13, `data max ${formatNumber(dataMax)}`, { size: 10, fill: '#555555' }));
    y += 26;
  }
  y += 4;
  const sample = 16;
  if (input.positive) {
    legend.push(`<rect x="${num(barX)}" y="${num(y)}" width="${sample}" height="${sample}" fill="${interpolateStops(stops, 0.85)}"/>`);
    legend.push(`<g fill="none">${outline('p', barX, y, sample)}</g>`);
    legend.push(svgText(barX + sample + 6, y + 12, 'P (advantageous)', { size: 11 }));
    y += sample + 8;
  }
  if (input.negative) {
    legend.push(`<rect x="${num(barX)}" y="${num(y)}" width="${sample}" height="${sample}" fill="${interpolateStops(stops, 0.15)}"/>`);
    legend.push(`<g fill="none">${outline('n', barX, y, sample)}</g>`);
    legend.push(svgText(barX + sample + 6, y + 12, 'N (disadvantageous)', { size: 11 }));
    y += sample + 8;
  }
  legend.push('</g>');
  body.push(...legend);

  const height = Math.max(top + gridH + tickSize + 34, y + 8);
  return svgDocument({ width, height, title: input.title, body });
}
