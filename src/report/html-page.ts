/**
 * Self-contained `index.html` reports (analysis, run summary): a title, nested sections with
 * paragraphs, key/value tables, data tables, inline SVG plots or links to SVG files, and
 * preformatted text. One inline stylesheet, no scripts, no external resources. Every piece of
 * text is escaped, links are made inert unless relative or http(s), and the output is also
 * well-formed XML (void elements self-closed), which the tests use to check it.
 */
import { autoAlign, cellText, type CellValue, type ColumnAlign } from './table-cell.js';
import { escapeXml } from './xml-escape.js';

export interface HtmlColumn {
  header: string;
  align?: ColumnAlign;
}

export type HtmlBlock =
  | { type: 'paragraph'; text: string }
  /** Two-column table of labelled values (model, seed, trainable parameters, …). */
  | { type: 'keyValue'; entries: readonly (readonly [string, CellValue])[] }
  | { type: 'table'; columns: readonly (string | HtmlColumn)[]; rows: readonly (readonly CellValue[])[]; caption?: string }
  /** An SVG produced by the report renderers, inlined. */
  | { type: 'svg'; svg: string; caption?: string }
  /** A link to an image file next to the page (relative path), shown inline. */
  | { type: 'image'; src: string; alt: string; caption?: string }
  | { type: 'links'; items: readonly { text: string; href: string }[] }
  /** Monospace text kept as is (e.g. a terminal table). */
  | { type: 'preformatted'; text: string };

export interface HtmlSection {
  title: string;
  blocks: readonly HtmlBlock[];
  sections?: readonly HtmlSection[];
}

export interface HtmlPageInput {
  title: string;
  subtitle?: string;
  sections: readonly HtmlSection[];
  /** Small print at the bottom (tool version, generation time, …). */
  footer?: string;
}

const STYLE = `
:root { color-scheme: light; }
body { margin: 0; background: #f3f4f6; color: #1f2328; line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 40px; background: #ffffff; min-height: 100vh; box-sizing: border-box; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3, h4, h5, h6 { font-size: 1.08em; margin: 22px 0 6px; }
p { margin: 6px 0 10px; max-width: 80ch; }
.subtitle { color: #57606a; margin: 0 0 12px; }
nav.toc { font-size: 0.92em; margin: 8px 0 0; }
nav.toc a { margin-right: 14px; white-space: nowrap; }
a { color: #0969da; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
caption { text-align: left; color: #57606a; padding-bottom: 4px; }
th, td { border: 1px solid #d0d7de; padding: 3px 10px; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f6f8fa; text-align: left; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { white-space: nowrap; }
figure { margin: 12px 0 22px; }
.plot { overflow-x: auto; }
.plot svg, figure img { max-width: 100%; height: auto; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 4px; max-width: 80ch; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 10px 12px; overflow-x: auto; font-size: 0.85em; line-height: 1.3; }
footer { color: #57606a; font-size: 0.85em; margin-top: 40px; border-top: 1px solid #d0d7de; padding-top: 8px; }
`;

/**
 * An href that cannot run script: relative paths are percent-encoded per segment (so `#`, `?`
 * and spaces in file names work), http(s) URLs pass, anything else with a scheme (including
 * `javascript:`) is turned into a relative path by a `./` prefix.
 */
export function safeHref(href: string): string {
  if (/^https?:\/\//i.test(href)) return href;
  const encoded = href.split('/').map((segment) => encodeURIComponent(segment)).join('/');
  return /^[a-z][a-z0-9+.-]*:/i.test(href) ? `./${encoded}` : encoded;
}

/**
 * Checks that `svg` is one SVG element without script (script elements, foreignObject, event
 * handler attributes, javascript: URLs) before it is inlined. The renderers never produce any
 * of these; this guards against a caller passing something else.
 */
function checkInlineSvg(svg: string): string {
  const body = svg.trim().replace(/^<\?xml[^>]*\?>\s*/, '');
  if (!/^<svg[\s>]/.test(body) || !/<\/svg>$/.test(body)) throw new RangeError('inline SVG must be a single <svg> element');
  for (const tag of body.match(/<[^>]*>/g) ?? []) {
    const unquoted = tag.replace(/"[^"]*"|'[^']*'/g, '""');
    if (/^<\/?\s*(script|foreignObject|iframe)/i.test(tag) || /\son[a-z]+\s*=/i.test(unquoted) || /[\s:]href\s*=\s*["']\s*javascript:/i.test(tag)) {
      throw new RangeError(`inline SVG contains active content: ${tag.slice(0, 60)}`);
    }
  }
  return body;
}

function renderTable(columns: readonly (string | HtmlColumn)[], rows: readonly (readonly CellValue[])[], caption?: string): string {
  const cols = columns.map((c) => (typeof c === 'string' ? { header: c } : c));
  const aligns = cols.map((c, j) => c.align ?? autoAlign(rows.map((r) => r[j])));
  const cls = (j: number) => (aligns[j] === 'right' ? ' class="num"' : '');
  const out = ['<table>'];
  if (caption) out.push(`<caption>${escapeXml(caption)}</caption>`);
  out.push(`<thead><tr>${cols.map((c, j) => `<th${cls(j)}>${escapeXml(c.header)}</th>`).join('')}</tr></thead>`);
  out.push('<tbody>');
  for (const row of rows) out.push(`<tr>${cols.map((_, j) => `<td${cls(j)}>${escapeXml(cellText(row[j]))}</td>`).join('')}</tr>`);
  out.push('</tbody></table>');
  return out.join('\n');
}

function renderBlock(block: HtmlBlock): string {
  switch (block.type) {
    case 'paragraph':
      return `<p>${escapeXml(block.text)}</p>`;
    case 'keyValue':
      return [
        '<table class="kv"><tbody>',
        ...block.entries.map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td>${escapeXml(cellText(v))}</td></tr>`),
        '</tbody></table>',
      ].join('\n');
    case 'table':
      return renderTable(block.columns, block.rows, block.caption);
    case 'svg':
      return `<figure><div class="plot">\n${checkInlineSvg(block.svg)}\n</div>${block.caption ? `<figcaption>${escapeXml(block.caption)}</figcaption>` : ''}</figure>`;
    case 'image': {
      const href = escapeXml(safeHref(block.src));
      return `<figure><a href="${href}"><img src="${href}" alt="${escapeXml(block.alt)}" /></a>${block.caption ? `<figcaption>${escapeXml(block.caption)}</figcaption>` : ''}</figure>`;
    }
    case 'links':
      return `<ul>\n${block.items.map((i) => `<li><a href="${escapeXml(safeHref(i.href))}">${escapeXml(i.text)}</a></li>`).join('\n')}\n</ul>`;
    case 'preformatted':
      return `<pre>${escapeXml(block.text)}</pre>`;
  }
}

/** Anchor ids from section titles: lowercase ASCII words joined by `-`, numbered when repeated. */
function makeSlugger(): (title: string) => string {
  const used = new Map<string, number>();
  return (title) => {
    const base = title.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'section';
    const n = (used.get(base) ?? 0) + 1;
    used.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  };
}

export function renderHtmlPage(input: HtmlPageInput): string {
  const slug = makeSlugger();
  const ids = input.sections.map((s) => slug(s.title));
  const renderSection = (section: HtmlSection, level: number, id?: string): string[] => {
    const h = `h${Math.min(6, level)}`;
    return [
      `<section>`,
      `<${h}${id ? ` id="${id}"` : ''}>${escapeXml(section.title)}</${h}>`,
      ...section.blocks.map(renderBlock),
      ...(section.sections ?? []).flatMap((s) => renderSection(s, level + 1)),
      '</section>',
    ];
  };
  const toc = input.sections.length >= 3
    ? [`<nav class="toc">${input.sections.map((s, i) => `<a href="#${ids[i]}">${escapeXml(s.title)}</a>`).join(' ')}</nav>`]
    : [];
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8" />',
    '<meta name="viewport" content="width=device-width, initial-scale=1" />',
    `<title>${escapeXml(input.title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    '<main>',
    `<h1>${escapeXml(input.title)}</h1>`,
    ...(input.subtitle ? [`<p class="subtitle">${escapeXml(input.subtitle)}</p>`] : []),
    ...toc,
    ...input.sections.flatMap((s, i) => renderSection(s, 2, ids[i])),
    ...(input.footer ? [`<footer>${escapeXml(input.footer)}</footer>`] : []),
    '</main>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
