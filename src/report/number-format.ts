/**
 * Human-readable number formats shared by terminal tables, HTML reports and plot labels:
 * bytes, counts, percentages, durations, perplexities. Locale-independent on purpose (output
 * must be identical on every machine and in CI logs), so no `toLocaleString`.
 */

/** Inserts `,` every three digits of the integer part: `11008` → `11,008`, `-1234.5` → `-1,234.5`. */
export function groupThousands(text: string): string {
  const match = /^([-+]?)(\d+)(.*)$/.exec(text);
  if (!match) return text;
  const [, sign, digits, rest] = match as unknown as [string, string, string, string];
  return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + rest;
}

function nonFinite(x: number): string | undefined {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return '∞';
  if (x === -Infinity) return '-∞';
  return undefined;
}

/** An integer count with thousands separators (rounded to the nearest integer): `2064` → `2,064`. */
export function formatCount(n: number): string {
  return nonFinite(n) ?? groupThousands(Math.round(n).toFixed(0));
}

/** Large counts in short form for titles and tick labels: `1100048384` → `1.10B`, `5632` → `5,632`. */
export function formatCountCompact(n: number): string {
  const bad = nonFinite(n);
  if (bad !== undefined) return bad;
  // [threshold, divisor, suffix], largest first; below 10,000 the plain count is short enough.
  const units: [number, number, string][] = [[1e12, 1e12, 'T'], [1e9, 1e9, 'B'], [1e6, 1e6, 'M'], [1e4, 1e3, 'k']];
  for (const [threshold, divisor, suffix] of units) {
    if (Math.abs(n) < threshold) continue;
    const scaled = n / divisor;
    const digits = Math.abs(scaled) >= 100 ? 0 : Math.abs(scaled) >= 10 ? 1 : 2;
    const text = scaled.toFixed(digits);
    // 999,999 would print as "1000k": the next unit up says it better.
    if (Math.abs(Number(text)) >= 1000 && suffix !== 'T') return formatCountCompact(Math.sign(n) * divisor * 1000);
    return `${text}${suffix}`;
  }
  return formatCount(n);
}

/**
 * A number with `significant` significant digits and no trailing zeros, thousands separators
 * for large magnitudes and exponent form for tiny ones: `0.012345` → `0.01235`, `1234.5` → `1,235`
 * (integers print exactly), `3e-7` → `3e-7`.
 */
export function formatNumber(x: number, significant = 4): string {
  const bad = nonFinite(x);
  if (bad !== undefined) return bad;
  if (x === 0) return '0';
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return formatCount(x);
  const magnitude = Math.abs(x);
  if (magnitude < 1e-3 || magnitude >= 1e15) {
    const [mantissa, exponent] = x.toExponential(significant - 1).split('e') as [string, string];
    return `${stripZeros(mantissa)}e${exponent.replace('+', '')}`;
  }
  if (magnitude >= 10 ** significant) return formatCount(x);
  return groupThousands(stripZeros(x.toPrecision(significant)));
}

function stripZeros(text: string): string {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

/**
 * Bytes in binary units, three significant figures: `512` → `512 B`, `1536` → `1.50 KiB`,
 * `1288490189` → `1.20 GiB`. A value that rounds up to 1024 of a unit moves to the next unit.
 */
export function formatBytes(bytes: number): string {
  const bad = nonFinite(bytes);
  if (bad !== undefined) return bad;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  const sign = bytes < 0 ? '-' : '';
  let value = Math.abs(bytes);
  if (value < 1024) return `${sign}${Math.round(value)} B`;
  let unit = 0;
  for (;;) {
    value /= 1024;
    unit += 1;
    const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
    const text = value.toFixed(digits);
    if (Number(text) < 1024 || unit === units.length - 1) return `${sign}${text} ${units[unit]}`;
  }
}

/**
 * A fraction as a percentage: `0.1875` → `18.8%`. A non-zero fraction that would print as
 * 0 gets enough extra digits to show its first significant digit (`0.000012` → `0.001%`).
 */
export function formatPercent(fraction: number, digits = 1): string {
  const bad = nonFinite(fraction);
  if (bad !== undefined) return bad;
  const percent = fraction * 100;
  let places = digits;
  while (percent !== 0 && Number(percent.toFixed(places)) === 0 && places < 12) places += 1;
  return `${percent.toFixed(places)}%`;
}

/**
 * A duration in seconds: `0.25` → `250ms`, `9.54` → `9.5s`, `65` → `1m 05s`,
 * `3723` → `1h 02m 03s`, `93784` → `1d 02h 03m`. Negative or non-finite → `--` (unknown ETA).
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const ms = Math.round(seconds * 1000);
  if (ms < 1000) return `${ms}ms`;
  if (seconds < 9.95) return `${seconds.toFixed(1)}s`;
  const total = Math.round(seconds);
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (days > 0) return `${days}d ${two(hours)}h ${two(minutes)}m`;
  if (hours > 0) return `${hours}h ${two(minutes)}m ${two(secs)}s`;
  if (minutes > 0) return `${minutes}m ${two(secs)}s`;
  return `${secs}s`;
}

/**
 * Perplexity with four significant digits, enough to tell 5.744 from 5.83 without printing
 * noise: `5.7449` → `5.745`, `12.3456` → `12.35`, `123.456` → `123.5`, `23456.7` → `23,457`.
 */
export function formatPerplexity(ppl: number): string {
  const bad = nonFinite(ppl);
  if (bad !== undefined) return bad;
  if (Math.abs(ppl) >= 1000) return formatCount(ppl);
  return ppl.toPrecision(4);
}
