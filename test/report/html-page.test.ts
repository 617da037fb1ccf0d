import { describe, expect, it } from 'vitest';
import { renderHtmlPage, safeHref } from '../../src/report/html-page.js';
import { renderHeatmapSvg } from '../../src/report/svg-heatmap.js';
import { byClass, byName, findAll, parseXml, textOf, type XmlElement } from './xml-tree.js';

const NASTY = `<script>alert("x")</script>&'`;

describe('renderHtmlPage', () => {
  const heatmap = renderHeatmapSvg({ title: `heads of x" onload="alert(1)`, values: [[1, -1]], scale: 'diverging', positive: [[0]], negative: [[1]] });
  const html = renderHtmlPage({
    title: `Analysis of ${NASTY}`,
    subtitle: 'stories260K',
    sections: [
      { title: 'Run', blocks: [{ type: 'keyValue', entries: [['model', NASTY], ['seed', 42], ['data', null]] }, { type: 'paragraph', text: `path: /m/${NASTY}` }] },
      {
        title: 'Perplexity',
        blocks: [{ type: 'table', caption: 'held-out', columns: ['stage', 'method', 'ppl'], rows: [['base', 'vanilla', '12.35'], ['1', NASTY, '8.000']] }],
        sections: [{ title: 'Details', blocks: [{ type: 'preformatted', text: 'a  <b>\n1  2' }] }],
      },
      { title: 'Plots', blocks: [{ type: 'svg', svg: heatmap, caption: 'rank counts' }, { type: 'image', src: 'plots/loss curve#1.svg', alt: NASTY }] },
      { title: 'Plots', blocks: [{ type: 'links', items: [{ text: 'stage 1', href: 'stages/1/index.html' }, { text: 'evil', href: 'javascript:alert(1)' }] }] },
    ],
    footer: 'apex 0.1.0',
  });
  const root = parseXml(html);

  it('is well-formed and self-contained', () => {
    expect(html.startsWith('<!DOCTYPE html>\n<html lang="en">')).toBe(true);
    expect(root.name).toBe('html');
    expect(findAll(root, (e) => ['script', 'link', 'iframe', 'object', 'embed'].includes(e.name))).toHaveLength(0);
    expect(findAll(root, byName('style'))).toHaveLength(1);
    const urls = findAll(root, (e) => 'src' in e.attrs || 'href' in e.attrs).map((e) => e.attrs.src ?? e.attrs.href ?? '');
    expect(urls.length).toBeGreaterThan(0);
    for (const url of urls) expect(url).not.toMatch(/^([a-z][a-z0-9+.-]*:|\/\/)/i);
  });

  it('escapes every piece of text', () => {
    expect(textOf(findAll(root, byName('title'))[0] as XmlElement)).toBe(`Analysis of ${NASTY}`);
    expect(textOf(findAll(root, byName('h1'))[0] as XmlElement)).toBe(`Analysis of ${NASTY}`);
    const kv = findAll(root, byClass('kv'))[0] as XmlElement;
    expect(findAll(kv, byName('td')).map(textOf)).toEqual([NASTY, '42', '–']);
    expect(findAll(root, byName('p')).map(textOf)).toContain(`path: /m/${NASTY}`);
    expect(textOf(findAll(root, byName('pre'))[0] as XmlElement)).toBe('a  <b>\n1  2');
    const img = findAll(root, byName('img'))[0] as XmlElement;
    expect(img.attrs.alt).toBe(NASTY);
    expect(img.attrs.src).toBe('plots/loss%20curve%231.svg');
  });

  it('right-aligns numeric columns of data tables', () => {
    const table = findAll(root, (e) => e.name === 'table' && e.attrs.class !== 'kv')[0] as XmlElement;
    expect(textOf(findAll(table, byName('caption'))[0] as XmlElement)).toBe('held-out');
    expect(findAll(table, byName('th')).map((th) => th.attrs.class ?? '')).toEqual(['', '', 'num']);
    expect(findAll(table, byName('td')).map(textOf)).toEqual(['base', 'vanilla', '12.35', '1', NASTY, '8.000']);
  });

  it('inlines the SVG plot and nests sections with unique anchors', () => {
    const svg = findAll(root, byName('svg'));
    expect(svg).toHaveLength(1);
    expect(findAll(svg[0] as XmlElement, byClass('marker-p'))).toHaveLength(1);
    expect(findAll(root, byName('h2')).map((h) => h.attrs.id)).toEqual(['run', 'perplexity', 'plots', 'plots-2']);
    expect(findAll(root, byName('h3')).map(textOf)).toEqual(['Details']);
    const toc = findAll(root, byClass('toc'))[0] as XmlElement;
    expect(findAll(toc, byName('a')).map((a) => a.attrs.href)).toEqual(['#run', '#perplexity', '#plots', '#plots-2']);
  });

  it('neutralises script URLs in links', () => {
    const hrefs = findAll(root, byName('li')).map((li) => findAll(li, byName('a'))[0]?.attrs.href);
    expect(hrefs).toEqual(['stages/1/index.html', './javascript%3Aalert(1)']);
  });

  it('refuses inline SVG with active content', () => {
    const page = (svg: string) => renderHtmlPage({ title: 't', sections: [{ title: 's', blocks: [{ type: 'svg', svg }] }] });
    expect(() => page('<svg><script>alert(1)</script></svg>')).toThrow(RangeError);
    expect(() => page('<svg onload="alert(1)"></svg>')).toThrow(RangeError);
    expect(() => page('<svg><a href="javascript:alert(1)"><text>x</text></a></svg>')).toThrow(RangeError);
    expect(() => page('<div></div>')).toThrow(RangeError);
    expect(() => page('<svg><title>x&quot; onload=&quot;y</title></svg>')).not.toThrow();
  });
});

describe('safeHref', () => {
  it('encodes relative paths and keeps web links', () => {
    expect(safeHref('../analysis/index.html')).toBe('../analysis/index.html');
    expect(safeHref('plots/a b?.svg')).toBe('plots/a%20b%3F.svg');
    expect(safeHref('https://huggingface.co/TinyLlama/x')).toBe('https://huggingface.co/TinyLlama/x');
    expect(safeHref('JavaScript:alert(1)')).toBe('./JavaScript%3Aalert(1)');
    expect(safeHref('data:text/html,x')).toBe('./data%3Atext/html%2Cx');
  });
});
