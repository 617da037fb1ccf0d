/**
 * Small building blocks shared by the SVG plots: the document wrapper, escaped text, compact
 * coordinate formatting, and a text-width estimate for layout. The plots use no ids, gradients
 * or clip paths, so several of them can be inlined into one HTML page without clashing.
 */
import { escapeXml } from './xml-escape.js';

export const FONT_FAMILY = 'DejaVu Sans, Verdana, Helvetica, Arial, sans-serif';

/** Average advance of a character of the plot font, as a fraction of the font size. */
const CHAR_WIDTH_EM = 0.6;

/** A coordinate with at most two decimals and no `-0` (keeps files small and deterministic). */
export function num(x: number): string {
  const r = Math.round(x * 100) / 100;
  return String(r === 0 ? 0 : r);
}

/** Generous width estimate of `text` in pixels (the font is not known for sure). */
export function estimateTextWidth(text: string, fontSize: number): number {
  return Array.from(text).length * fontSize * CHAR_WIDTH_EM;
}

/** Shortens `text` with `…` so that its estimated width fits `maxWidth`. */
export function fitText(text: string, maxWidth: number, fontSize: number): string {
  if (estimateTextWidth(text, fontSize) <= maxWidth + 1e-6) return text;
  const chars = Array.from(text);
  const fit = Math.floor(maxWidth / (fontSize * CHAR_WIDTH_EM) + 1e-6);
  return `${chars.slice(0, Math.max(0, fit - 1)).join('')}…`;
}

export interface TextOptions {
  anchor?: 'start' | 'middle' | 'end';
  size?: number;
  weight?: 'bold';
  fill?: string;
  /** Degrees, around (x, y). */
  rotate?: number;
  className?: string;
}

/** A `<text>` element; (x, y) is the baseline point. The text is escaped. */
export function svgText(x: number, y: number, text: string, options: TextOptions = {}): string {
  const attrs = [`x="${num(x)}"`, `y="${num(y)}"`];
  if (options.className) attrs.unshift(`class="${escapeXml(options.className)}"`);
  if (options.anchor && options.anchor !== 'start') attrs.push(`text-anchor="${options.anchor}"`);
  if (options.size !== undefined) attrs.push(`font-size="${num(options.size)}"`);
  if (options.weight) attrs.push(`font-weight="${options.weight}"`);
  if (options.fill) attrs.push(`fill="${options.fill}"`);
  if (options.rotate) attrs.push(`transform="rotate(${num(options.rotate)} ${num(x)} ${num(y)})"`);
  return `<text ${attrs.join(' ')}>${escapeXml(text)}</text>`;
}

/** `<title>` child giving an element its tooltip. */
export function svgTitle(text: string): string {
  return `<title>${escapeXml(text)}</title>`;
}

export interface SvgDocumentOptions {
  width: number;
  height: number;
  /** Accessible name and tooltip of the whole figure. */
  title: string;
  /** Already-rendered child elements. */
  body: readonly string[];
}

/** A standalone SVG document (also valid inline in HTML) with a white background. */
export function svgDocument(options: SvgDocumentOptions): string {
  const w = Math.ceil(options.width);
  const h = Math.ceil(options.height);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" ` +
      `font-family="${FONT_FAMILY}" font-size="12" role="img" aria-label="${escapeXml(options.title)}">`,
    svgTitle(options.title),
    `<rect width="${w}" height="${h}" fill="#ffffff"/>`,
    ...options.body,
    '</svg>',
    '',
  ].join('\n');
}

/** Title and optional subtitle lines at the top left; returns the elements and the height used. */
export function svgHeading(x: number, title: string, subtitle: string | undefined, maxWidth: number): { elements: string[]; height: number } {
  const elements = [svgText(x, 22, fitText(title, maxWidth, 15), { size: 15, weight: 'bold', className: 'plot-title' })];
  if (subtitle) elements.push(svgText(x, 40, fitText(subtitle, maxWidth, 11), { size: 11, fill: '#555555', className: 'plot-subtitle' }));
  return { elements, height: subtitle ? 52 : 34 };
}
