/**
 * Aligned plain-text tables for the terminal and CI logs: numbers right-aligned, text left,
 * a dashed rule under the header, and an optional total width that truncates the widest text
 * columns with `…`. Also the per-layer selection summary printed by `apex analyze`.
 * Widths count code points (no East-Asian double-width handling).
 */
import { autoAlign, cellText, type CellValue, type ColumnAlign } from './table-cell.js';

export interface TerminalColumn {
  header: string;
  /** Default: right if every cell of the column is numeric, else left. */
  align?: ColumnAlign;
  /** Cells (and the header) longer than this are cut with `…`. */
  maxWidth?: number;
}

export interface TerminalTableInput {
  columns: readonly (string | TerminalColumn)[];
  rows: readonly (readonly CellValue[])[];
  /** Total line width to fit (e.g. `process.stdout.columns`); text columns shrink first. */
  maxWidth?: number;
  /** Spaces between columns (default 2). */
  gap?: number;
}

const MIN_COLUMN_WIDTH = 4;

const width = (text: string) => Array.from(text).length;

/** Cuts `text` to `max` code points, ending in `…` when something was cut. */
export function truncateText(text: string, max: number): string {
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  if (max <= 1) return '…'.slice(0, max);
  return `${chars.slice(0, max - 1).join('')}…`;
}

function pad(text: string, size: number, align: ColumnAlign): string {
  const fill = ' '.repeat(Math.max(0, size - width(text)));
  return align === 'right' ? fill + text : text + fill;
}

export function renderTerminalTable(input: TerminalTableInput): string {
  const columns = input.columns.map((c) => (typeof c === 'string' ? { header: c } : c));
  const gap = input.gap ?? 2;
  const texts = input.rows.map((row) => columns.map((_, j) => cellText(row[j]).replace(/[\r\n\t]+/g, ' ')));
  const aligns = columns.map((c, j) => c.align ?? autoAlign(input.rows.map((row) => row[j])));
  const widths = columns.map((c, j) => {
    const natural = Math.max(width(c.header), ...texts.map((row) => width(row[j] as string)));
    return c.maxWidth !== undefined ? Math.min(natural, Math.max(1, c.maxWidth)) : natural;
  });
  if (input.maxWidth !== undefined) {
    const total = () => widths.reduce((a, b) => a + b, 0) + gap * Math.max(0, columns.length - 1);
    while (total() > input.maxWidth) {
      // Shrink the widest left-aligned (text) column; numbers only when no text column can give.
      const candidates = (side: ColumnAlign) => widths.map((w, j) => ({ w, j })).filter(({ w, j }) => aligns[j] === side && w > MIN_COLUMN_WIDTH);
      const pool = candidates('left').length ? candidates('left') : candidates('right');
      if (!pool.length) break;
      const widest = pool.reduce((a, b) => (b.w > a.w ? b : a));
      widths[widest.j] = widest.w - 1;
    }
  }
  const line = (cells: readonly string[]) =>
    cells.map((text, j) => pad(truncateText(text, widths[j] as number), widths[j] as number, aligns[j] as ColumnAlign)).join(' '.repeat(gap)).trimEnd();
  return [
    line(columns.map((c) => c.header)),
    widths.map((w) => '-'.repeat(w)).join(' '.repeat(gap)),
    ...texts.map(line),
  ].join('\n');
}

export interface LayerSummaryRow {
  layer: number;
  /** Selected advantageous units (heads or KV groups), in selection order. */
  positive: readonly number[];
  /** Selected disadvantageous units, in selection order. */
  negative: readonly number[];
  /** Coefficient of variation of the head (or group) activation norms. */
  cvHeads: number;
  /** Coefficient of variation of the FFN channel activation norms. */
  cvChannels: number;
}

/** `layer | P heads | N heads | CV heads | CV channels` (units named `groups` under GQA). */
export function renderLayerSummaryTable(rows: readonly LayerSummaryRow[], options: { unitName?: string; maxWidth?: number } = {}): string {
  const unit = options.unitName ?? 'heads';
  const cv = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : null);
  return renderTerminalTable({
    columns: ['layer', { header: `P ${unit}`, align: 'left' }, { header: `N ${unit}`, align: 'left' }, { header: `CV ${unit}`, align: 'right' }, { header: 'CV channels', align: 'right' }],
    rows: rows.map((r) => [r.layer, r.positive.join(','), r.negative.join(','), cv(r.cvHeads), cv(r.cvChannels)]),
    ...(options.maxWidth !== undefined ? { maxWidth: options.maxWidth } : {}),
  });
}
