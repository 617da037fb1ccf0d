import { describe, expect, it } from 'vitest';
import {
  formatBytes, formatCount, formatCountCompact, formatDuration, formatNumber, formatPercent, formatPerplexity, groupThousands,
} from '../../src/report/number-format.js';

describe('number formats', () => {
  it('groups thousands', () => {
    expect(groupThousands('11008')).toBe('11,008');
    expect(groupThousands('-1234567.891')).toBe('-1,234,567.891');
    expect(groupThousands('999')).toBe('999');
    expect(formatCount(2064)).toBe('2,064');
    expect(formatCount(1_100_048_384)).toBe('1,100,048,384');
    expect(formatCount(-5632)).toBe('-5,632');
    expect(formatCount(12.6)).toBe('13');
  });

  it('compacts large counts', () => {
    expect(formatCountCompact(1_100_048_384)).toBe('1.10B');
    expect(formatCountCompact(6_738_415_616)).toBe('6.74B');
    expect(formatCountCompact(33_554_432)).toBe('33.6M');
    expect(formatCountCompact(262_144)).toBe('262k');
    expect(formatCountCompact(5632)).toBe('5,632');
    expect(formatCountCompact(999_999)).toBe('1.00M');
    expect(formatCountCompact(-12_345)).toBe('-12.3k');
  });

  it('prints general numbers with 4 significant digits', () => {
    expect(formatNumber(0.012346)).toBe('0.01235');
    expect(formatNumber(1234.5)).toBe('1,235');
    expect(formatNumber(12.5)).toBe('12.5');
    expect(formatNumber(-3)).toBe('-3');
    expect(formatNumber(96)).toBe('96');
    expect(formatNumber(3e-7)).toBe('3e-7');
    expect(formatNumber(0.000123456)).toBe('1.235e-4');
    expect(formatNumber(0)).toBe('0');
    expect(formatNumber(Number.NaN)).toBe('NaN');
    expect(formatNumber(-Infinity)).toBe('-∞');
  });

  it('prints bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024)).toBe('1.00 KiB');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(12.5 * 1024 ** 2)).toBe('12.5 MiB');
    expect(formatBytes(1.2 * 1024 ** 3)).toBe('1.20 GiB');
    expect(formatBytes(4 * 1024 ** 3)).toBe('4.00 GiB');
    expect(formatBytes(600 * 1024 ** 2)).toBe('600 MiB');
    // 1023.9 KiB would print as "1024 KiB": it moves up a unit instead.
    expect(formatBytes(1023.9 * 1024)).toBe('1.00 MiB');
    expect(formatBytes(-2048)).toBe('-2.00 KiB');
  });

  it('prints percentages', () => {
    expect(formatPercent(0.1875)).toBe('18.8%');
    expect(formatPercent(0.518)).toBe('51.8%');
    expect(formatPercent(1)).toBe('100.0%');
    expect(formatPercent(0.1875, 2)).toBe('18.75%');
    expect(formatPercent(0)).toBe('0.0%');
    // operators are ~0.1% of a model or less: tiny fractions keep one significant digit
    expect(formatPercent(0.000012)).toBe('0.001%');
    expect(formatPercent(0.00049)).toBe('0.05%');
  });

  it('prints durations', () => {
    expect(formatDuration(0.25)).toBe('250ms');
    expect(formatDuration(0.9996)).toBe('1.0s');
    expect(formatDuration(9.54)).toBe('9.5s');
    expect(formatDuration(42.4)).toBe('42s');
    expect(formatDuration(59.6)).toBe('1m 00s');
    expect(formatDuration(65)).toBe('1m 05s');
    expect(formatDuration(3723)).toBe('1h 02m 03s');
    expect(formatDuration(93784)).toBe('1d 02h 03m');
    expect(formatDuration(Number.NaN)).toBe('--');
    expect(formatDuration(-1)).toBe('--');
  });

  it('prints perplexities with four significant digits', () => {
    expect(formatPerplexity(5.7449)).toBe('5.745');
    expect(formatPerplexity(5.83)).toBe('5.830');
    expect(formatPerplexity(12.3456)).toBe('12.35');
    expect(formatPerplexity(123.456)).toBe('123.5');
    expect(formatPerplexity(23456.7)).toBe('23,457');
    expect(formatPerplexity(Infinity)).toBe('∞');
  });
});
