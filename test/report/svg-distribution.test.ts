import { describe, expect, it } from 'vitest';
import { histogramEdges, layerHistogram, renderChannelDistributionSvg } from '../../src/report/svg-distribution.js';
import { byClass, findAll, parseXml, textOf, tooltipOf, type XmlElement } from './xml-tree.js';

/** x coordinates of the vertices of an SVG path made of M/V/H/Z commands. */
function pathXs(d: string): number[] {
  return [...d.matchAll(/([MH])(-?[\d.]+)/g)].map((m) => Number(m[2]));
}

describe('histogram binning', () => {
  it('centres whole-width bins on integers for integer scores', () => {
    expect(histogramEdges(-3, 4, 'integer')).toEqual([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5]);
    const wide = histogramEdges(-96, 96, 'integer');
    expect(wide).toHaveLength(98);
    expect(wide[1]! - wide[0]!).toBe(2);
    expect(wide[0]).toBe(-96.5);
    expect(wide[wide.length - 1]).toBeGreaterThan(96);
    expect(histogramEdges(0, 1, 'linear')).toHaveLength(101);
    const log = histogramEdges(0.1, 1000, 'log');
    expect(log).toHaveLength(101);
    expect(log[0]).toBeCloseTo(0.1, 12);
    expect(log[25]).toBeCloseTo(1, 10); // 4 decades over 100 bins: one decade per 25 bins
    expect(log[100]).toBe(1000);
  });

  it('counts channels per bin, split by selection', () => {
    const scores = [-3, -3, -2, 0, 0, 0, 1, 4];
    const h = layerHistogram(scores, histogramEdges(-3, 4, 'integer'), [7, 6], [0, 1]);
    expect(h.total).toEqual([2, 1, 0, 3, 1, 0, 0, 1]);
    expect(h.positive).toEqual([0, 0, 0, 0, 1, 0, 0, 1]);
    expect(h.negative).toEqual([2, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('puts the maximum into the last bin and ignores non-finite scores', () => {
    const h = layerHistogram([0, 0.5, 1, Number.NaN], histogramEdges(0, 1, 'linear'));
    expect(h.total.reduce((a, b) => a + b)).toBe(3);
    expect([h.total[0], h.total[50], h.total[99]]).toEqual([1, 1, 1]);
  });
});

describe('renderChannelDistributionSvg', () => {
  // 22 layers x 5632 channels: channel c of layer l scores ((c * 37 + l) % 193) - 96, so every
  // layer holds each score in -96..96 about 29 times; P = the 1056 highest, N = the 1056 lowest.
  const layers = 22;
  const channels = 5632;
  const k = 1056;
  const scores = Array.from({ length: layers }, (_, l) => Float32Array.from({ length: channels }, (_, c) => ((c * 37 + l) % 193) - 96));
  const order = (row: Float32Array) => Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
  const positive = scores.map((row) => order(row).slice(0, k));
  const negative = scores.map((row) => order(row).reverse().slice(0, k));
  const svg = renderChannelDistributionSvg({ title: 'FFN <channels> & "scores"', scores, positive, negative, valueLabel: 'rank count' });
  const root = parseXml(svg);
  const rows = findAll(root, byClass('layer-row'));

  it('draws one histogram row per layer with selection counts', () => {
    expect(rows).toHaveLength(layers);
    expect(rows.map((r) => r.attrs['data-layer'])).toEqual(Array.from({ length: layers }, (_, l) => String(l)));
    for (const r of rows) {
      expect(r.attrs['data-positive']).toBe(String(k));
      expect(r.attrs['data-negative']).toBe(String(k));
      expect(findAll(r, byClass('bins-all'))).toHaveLength(1);
      expect(findAll(r, byClass('median'))).toHaveLength(1);
    }
  });

  it('highlights P in the upper tail and N in the lower tail, right of and left of the rest', () => {
    for (const r of rows) {
      const p = pathXs((findAll(r, byClass('bins-p'))[0] as XmlElement).attrs.d as string);
      const n = pathXs((findAll(r, byClass('bins-n'))[0] as XmlElement).attrs.d as string);
      const all = pathXs((findAll(r, byClass('bins-all'))[0] as XmlElement).attrs.d as string);
      expect(Math.max(...n)).toBeLessThan(Math.min(...p));
      expect(Math.max(...p)).toBe(Math.max(...all));
      expect(Math.min(...n)).toBe(Math.min(...all));
    }
  });

  it('reports the P and N thresholds per layer', () => {
    // thresholds straight from the data: the k-th highest and the k-th lowest score
    const row0 = Array.from(scores[0]!).sort((a, b) => b - a);
    const pFrom = row0[k - 1];
    const nTo = row0[channels - k];
    expect(tooltipOf(rows[0] as XmlElement)).toContain(`P: 1,056 channels ≥ ${pFrom}`);
    expect(tooltipOf(rows[0] as XmlElement)).toContain(`N: 1,056 channels ≤ ${nTo}`);
    expect(tooltipOf(rows[0] as XmlElement)).toMatch(/^layer 0: 5,632 channels; min -96, median -?\d+, max 96;/);
  });

  it('escapes the title and stays small', () => {
    expect(textOf(findAll(root, byClass('plot-title'))[0] as XmlElement)).toBe('FFN <channels> & "scores"');
    expect(svg.length).toBeLessThan(150_000);
  });

  it('switches to a log score axis for positive scores spanning a wide range', () => {
    const norms = [[0.5, 1, 2, 4, 50], [0.6, 1.1, 3, 5, 8]];
    const axisTitle = (svg: string) => textOf(findAll(parseXml(svg), byClass('axis-title'))[0] as XmlElement);
    expect(axisTitle(renderChannelDistributionSvg({ title: 't', scores: norms, valueLabel: 'norm' }))).toBe('norm (log scale)');
    expect(axisTitle(renderChannelDistributionSvg({ title: 't', scores: norms, valueLabel: 'norm', scoreAxis: 'linear' }))).toBe('norm');
    expect(axisTitle(renderChannelDistributionSvg({ title: 't', scores: [[1, 2, 5]], valueLabel: 'norm' }))).toBe('norm');
    expect(axisTitle(renderChannelDistributionSvg({ title: 't', scores: [[-1, 50]], valueLabel: 'count', scoreAxis: 'log' }))).toBe('count');
  });

  it('omits highlight paths without selections and rejects bad indices', () => {
    const plain = parseXml(renderChannelDistributionSvg({ title: 't', scores: [[1, 2, 3]] }));
    expect(findAll(plain, byClass('bins-p'))).toHaveLength(0);
    expect(findAll(plain, byClass('bins-n'))).toHaveLength(0);
    expect(() => renderChannelDistributionSvg({ title: 't', scores: [[1, 2, 3]], positive: [[3]] })).toThrow(RangeError);
    expect(() => renderChannelDistributionSvg({ title: 't', scores: [[1, 2, 3]], negative: [[0], [1]] })).toThrow(RangeError);
  });
});
