import { describe, expect, it } from 'vitest';
import { renderBarChartSvg } from '../../src/report/svg-bar-chart.js';
import { formatPerplexity } from '../../src/report/number-format.js';
import { byClass, byName, findAll, parseXml, textOf, tooltipOf, type XmlElement } from './xml-tree.js';

const box = (e: XmlElement) => ({ x: Number(e.attrs.x), y: Number(e.attrs.y), h: Number(e.attrs.height), w: Number(e.attrs.width) });

describe('renderBarChartSvg', () => {
  const root = parseXml(renderBarChartSvg({
    title: 'Held-out perplexity',
    categories: ['base', 'stage 1', 'stage 2'],
    series: [
      { name: 'APEX <full>', values: [12, 8, 6] },
      { name: 'vanilla & co', values: [12, null, 9] },
    ],
    yLabel: 'perplexity',
    formatValue: formatPerplexity,
  }));
  const bars = findAll(root, byClass('bar'));

  it('draws one bar per present value with its tooltip', () => {
    expect(bars).toHaveLength(5);
    expect(bars.map(tooltipOf)).toEqual([
      'APEX <full>, base: 12.00', 'APEX <full>, stage 1: 8.000', 'APEX <full>, stage 2: 6.000',
      'vanilla & co, base: 12.00', 'vanilla & co, stage 2: 9.000',
    ]);
  });

  it('starts bars at zero with heights proportional to values, groups side by side', () => {
    const b = bars.map(box);
    const bottoms = b.map((r) => r.y + r.h);
    expect(new Set(bottoms.map((v) => v.toFixed(1))).size).toBe(1);
    expect(b[0]!.h / b[2]!.h).toBeCloseTo(2, 2);
    expect(b[4]!.h / b[2]!.h).toBeCloseTo(1.5, 2);
    // series 2 sits right of series 1 in the same group; groups go left to right
    expect(b[3]!.x).toBeGreaterThan(b[0]!.x);
    expect(b[3]!.x).toBeLessThan(b[1]!.x);
  });

  it('prints values over bars and names series in the legend', () => {
    const texts = findAll(root, byName('text')).map(textOf);
    expect(texts).toEqual(expect.arrayContaining(['12.00', '8.000', '6.000', '9.000', 'APEX <full>', 'vanilla & co']));
  });

  it('hangs negative bars below zero and turns long category labels diagonal', () => {
    const r = parseXml(renderBarChartSvg({
      title: 't', yLabel: 'Δ erank',
      categories: Array.from({ length: 14 }, (_, i) => `model.layers.${i}.mlp.down_proj`),
      series: [{ name: 'ΔW', values: Array.from({ length: 14 }, (_, i) => (i % 2 ? -3 : 6)) }],
    }));
    const b = findAll(r, byClass('bar')).map(box);
    expect(b).toHaveLength(14);
    expect(b[0]!.y + b[0]!.h).toBeCloseTo(b[1]!.y, 1);
    expect(b[0]!.h / b[1]!.h).toBeCloseTo(2, 2);
    const rotated = findAll(r, (e) => e.name === 'text' && (e.attrs.transform ?? '').startsWith('rotate(-40'));
    expect(rotated).toHaveLength(14);
  });

  it('rejects a series whose length does not match the categories', () => {
    expect(() => renderBarChartSvg({ title: 't', yLabel: 'y', categories: ['a', 'b'], series: [{ name: 's', values: [1] }] })).toThrow(RangeError);
  });
});
