/**
 * Table cells shared by the terminal and HTML tables: what a cell may hold, how it prints,
 * and whether it reads as a number (numbers are right-aligned so their digits line up).
 */

export type CellValue = string | number | null | undefined;
export type ColumnAlign = 'left' | 'right';

/** Missing values print as an en dash rather than an empty cell, so gaps are visible. */
export const MISSING_CELL = '–';

export function cellText(value: CellValue): string {
  if (value === null || value === undefined) return MISSING_CELL;
  return typeof value === 'number' ? String(value) : value;
}

/**
 * A number, or a string that starts as one and ends in a short unit (`1,234`, `-0.5`,
 * `18.8%`, `1.50 GiB`, `12s`, `3.2e-5`, `1.10B`) or a duration (`1h 02m 03s`, `4m 05s`).
 */
export function isNumericCell(value: CellValue): boolean {
  if (typeof value === 'number') return true;
  if (typeof value !== 'string') return false;
  const text = value.trim();
  const number = /^[-+−]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][-+]?\d+)?( ?[%a-zA-Zµ]{1,4})?$/;
  const duration = /^\d+d \d+h \d+m$|^(\d+h )?\d+m \d+s$/;
  return number.test(text) || duration.test(text);
}

/** Right for columns whose every present cell is numeric, else left (dashes count as absent). */
export function autoAlign(cells: readonly CellValue[]): ColumnAlign {
  const present = cells.filter((c) => c !== null && c !== undefined && !['', MISSING_CELL, '-', '--', '—'].includes(String(c).trim()));
  return present.length > 0 && present.every(isNumericCell) ? 'right' : 'left';
}
