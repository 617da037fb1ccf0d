/**
 * Colour scales for the report plots: a diverging blue–white–red scale centred on 0 (rank
 * counts: red = advantageous, blue = disadvantageous), the sequential viridis scale (norms,
 * perceptually uniform and readable in greyscale) and a colour-blind-safe categorical palette
 * (Okabe–Ito) for series. Colours are `#rrggbb` strings so outputs are byte-deterministic.
 */

/** ColorBrewer RdBu, 11 classes, reversed so that negative values are blue. */
export const DIVERGING_STOPS: readonly string[] = [
  '#053061', '#2166ac', '#4393c3', '#92c5de', '#d1e5f0', '#f7f7f7',
  '#fddbc7', '#f4a582', '#d6604d', '#b2182b', '#67001f',
];

/** viridis sampled at 9 evenly spaced points. */
export const SEQUENTIAL_STOPS: readonly string[] = [
  '#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80', '#5ec962', '#addc30', '#fde725',
];

/** Okabe–Ito without its yellow (too pale on white), then black. */
export const CATEGORICAL_COLORS: readonly string[] = [
  '#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000',
];

type Rgb = [number, number, number];

function parseHex(hex: string): Rgb {
  const n = Number.parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function toHex(rgb: Rgb): string {
  return `#${rgb.map((c) => Math.round(c).toString(16).padStart(2, '0')).join('')}`;
}

/** Piecewise-linear interpolation (in sRGB) through evenly spaced stops; t is clamped to [0, 1]. */
export function interpolateStops(stops: readonly string[], t: number): string {
  const clamped = Number.isFinite(t) ? Math.min(1, Math.max(0, t)) : 0.5;
  const position = clamped * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(position));
  const f = position - i;
  const a = parseHex(stops[i] as string);
  const b = parseHex(stops[i + 1] as string);
  return toHex([a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f]);
}

/** Colour of `value` on the diverging scale spanning [-maxAbs, maxAbs] (white at 0). */
export function divergingColor(value: number, maxAbs: number): string {
  if (!(maxAbs > 0)) return interpolateStops(DIVERGING_STOPS, 0.5);
  return interpolateStops(DIVERGING_STOPS, 0.5 + value / (2 * maxAbs));
}

/** Colour of `value` on viridis spanning [min, max]; a degenerate domain maps to the middle. */
export function sequentialColor(value: number, min: number, max: number): string {
  if (!(max > min)) return interpolateStops(SEQUENTIAL_STOPS, 0.5);
  return interpolateStops(SEQUENTIAL_STOPS, (value - min) / (max - min));
}

export function categoricalColor(index: number): string {
  return CATEGORICAL_COLORS[index % CATEGORICAL_COLORS.length] as string;
}

/** WCAG relative luminance of a `#rrggbb` colour, 0 (black) … 1 (white). */
export function relativeLuminance(hex: string): number {
  const [r, g, b] = parseHex(hex).map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as Rgb;
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** Black or white, whichever reads better on `background`. */
export function textColorOn(background: string): string {
  return relativeLuminance(background) > 0.179 ? '#000000' : '#ffffff';
}
