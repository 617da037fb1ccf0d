/**
 * Axis arithmetic for the plots: "nice" tick values (1, 2, 5 × 10^k steps), log-axis ticks,
 * tick labels whose precision follows the step, and the value → pixel mapping.
 */
import { formatCountCompact, formatNumber, groupThousands } from './number-format.js';

export interface AxisTicks {
  /** The axis range, widened to whole ticks on linear axes. */
  domain: [number, number];
  ticks: number[];
  labels: string[];
}

/** Removes binary noise from a computed tick value (0.30000000000000004 → 0.3) and -0. */
function clean(value: number): number {
  const v = Number(value.toPrecision(12));
  return v === 0 ? 0 : v;
}

/** The 1/2/5 × 10^k step nearest to `raw` from above-ish. */
export function niceStep(raw: number): number {
  const power = Math.floor(Math.log10(raw));
  const base = 10 ** power;
  const fraction = raw / base;
  const nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  return clean(nice * base);
}

/** Labels for evenly spaced ticks: decimals follow the step, values from 10,000 up get k/M/B/T suffixes. */
export function formatTickLabels(ticks: readonly number[], step: number): string[] {
  const largest = Math.max(0, ...ticks.map((t) => Math.abs(t)));
  // [threshold, divisor, suffix]: 10,000 and up print as "10k"; 1,000–9,999 stay plain.
  const units: [number, number, string][] = [[1e12, 1e12, 'T'], [1e9, 1e9, 'B'], [1e6, 1e6, 'M'], [1e4, 1e3, 'k']];
  const [, divisor, suffix] = units.find(([threshold]) => largest >= threshold) ?? [1, 1, ''];
  const decimals = Math.max(0, -Math.floor(Math.log10(step / divisor) + 1e-9));
  // Suffixed labels read better trimmed (500k, 1M, 1.5M); plain ones keep equal decimals.
  const trim = (text: string) => (suffix && text.includes('.') ? text.replace(/\.?0+$/, '') : text);
  return ticks.map((t) => (t === 0 ? '0' : `${groupThousands(trim(clean(t / divisor).toFixed(decimals)))}${suffix}`));
}

/**
 * About `target` nice ticks covering [min, max]; the domain is widened to the outer ticks.
 * A degenerate range is widened around its value first.
 */
export function linearTicks(min: number, max: number, target = 5): AxisTicks {
  let lo = min;
  let hi = max;
  if (!(hi > lo)) {
    const half = lo === 0 ? 1 : Math.abs(lo) / 2;
    lo -= half;
    hi += half;
  }
  const step = niceStep((hi - lo) / Math.max(1, target));
  const first = Math.floor(clean(lo / step));
  const last = Math.ceil(clean(hi / step));
  const ticks: number[] = [];
  for (let i = first; i <= last; i += 1) ticks.push(clean(i * step));
  return { domain: [ticks[0] as number, ticks[ticks.length - 1] as number], ticks, labels: formatTickLabels(ticks, step) };
}

/**
 * Ticks for a log axis over [min, max] (both > 0; the domain is kept as given): decades when
 * the range spans at least two, else 1-2-5 or 1…9 multiples, else linear ticks inside the range.
 */
export function logTicks(min: number, max: number): AxisTicks {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  for (const multiples of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
    const ticks: number[] = [];
    for (let p = lo; p <= hi; p += 1) {
      for (const m of multiples) {
        const v = clean(m * 10 ** p);
        if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) ticks.push(v);
      }
    }
    if (ticks.length >= 3 || (multiples.length === 9 && ticks.length >= 2)) {
      const labels = ticks.map((t) => (t >= 1e4 ? formatCountCompact(t) : formatNumber(t, 6)));
      return { domain: [min, max], ticks, labels };
    }
  }
  const inner = linearTicks(min, max, 4);
  const ticks = inner.ticks.filter((t) => t >= min && t <= max);
  const step = (inner.ticks[1] as number) - (inner.ticks[0] as number);
  return { domain: [min, max], ticks, labels: formatTickLabels(ticks, step) };
}

/** Maps a value in `domain` linearly (or log-linearly) onto the pixel interval `range`. */
export function makeScale(domain: readonly [number, number], range: readonly [number, number], log = false): (v: number) => number {
  const f = log ? Math.log10 : (v: number) => v;
  const d0 = f(domain[0]);
  const d1 = f(domain[1]);
  const span = d1 - d0 || 1;
  return (v: number) => range[0] + ((f(v) - d0) / span) * (range[1] - range[0]);
}
