import { describe, expect, it } from 'vitest';
import { autoAlign, cellText, isNumericCell } from '../../src/report/table-cell.js';
import { formatBytes, formatCount, formatDuration, formatPercent, formatPerplexity } from '../../src/report/number-format.js';

describe('table cells', () => {
  it('recognises numbers and the outputs of the number formats', () => {
    for (const v of [3, -0.5, '1,234', '18.8%', '1.50 GiB', '12s', '3.2e-5', '1.10B', formatDuration(3723), formatDuration(65), formatDuration(93784),
      formatBytes(512), formatCount(11008), formatPercent(0.000012), formatPerplexity(5.7449)]) {
      expect(isNumericCell(v), String(v)).toBe(true);
    }
    for (const v of ['stage 1', 'q_proj', '3,7,12', '1.2.3', 'APEX 2', '', null, undefined]) {
      expect(isNumericCell(v), String(v)).toBe(false);
    }
  });

  it('right-aligns a column only when every present cell is numeric', () => {
    expect(autoAlign(['1', null, '–', '2.5'])).toBe('right');
    expect(autoAlign(['1', 'x'])).toBe('left');
    expect(autoAlign([null, '–'])).toBe('left');
  });

  it('prints missing values as a dash', () => {
    expect(cellText(null)).toBe('–');
    expect(cellText(undefined)).toBe('–');
    expect(cellText(0)).toBe('0');
    expect(cellText('')).toBe('');
  });
});
