import { describe, expect, it } from 'vitest';
import { DIVERGING_STOPS, SEQUENTIAL_STOPS } from '../../src/report/color-scale.js';
import { renderHeatmapSvg } from '../../src/report/svg-heatmap.js';
import { byClass, byName, findAll, parseXml, textOf, tooltipOf, type XmlElement } from './xml-tree.js';

const at = (e: XmlElement) => `${e.attrs['data-row']},${e.attrs['data-col']}`;

// 5 layers x 4 KV groups; extremes -38 (layer 4, group 3) and +38 (layer 2, group 2).
const values = [
  [31, 16, -24, -17],
  [-1, 34, -2, -12],
  [27, -31, 38, -19],
  [-6, 23, -4, 10],
  [17, 14, 0, -38],
];
const positive = [[0], [1], [2], [1], [0]];
const negative = [[2], [3], [1], [0], [3]];

describe('renderHeatmapSvg', () => {
  const svg = renderHeatmapSvg({ title: 'KV groups', values, scale: 'diverging', columnAxis: 'KV group', valueLabel: 'rank count', positive, negative });
  const root = parseXml(svg);
  const cells = findAll(root, byClass('cell'));

  it('draws one cell per value, row-major, with the value in its tooltip', () => {
    expect(root.name).toBe('svg');
    expect(cells).toHaveLength(20);
    expect(cells.map(at)).toEqual(values.flatMap((row, r) => row.map((_, c) => `${r},${c}`)));
    expect(tooltipOf(cells[0] as XmlElement)).toBe('layer 0, KV group 0: 31 (P, advantageous)');
    expect(tooltipOf(cells[2] as XmlElement)).toBe('layer 0, KV group 2: -24 (N, disadvantageous)');
    expect(tooltipOf(cells[1] as XmlElement)).toBe('layer 0, KV group 1: 16');
  });

  it('maps the extremes to the ends of the diverging scale and 0 to white', () => {
    const fill = (r: number, c: number) => cells[r * 4 + c]?.attrs.fill;
    expect(fill(4, 3)).toBe(DIVERGING_STOPS[0]);
    expect(fill(2, 2)).toBe(DIVERGING_STOPS[DIVERGING_STOPS.length - 1]);
    expect(fill(4, 2)).toBe('#f7f7f7');
    expect(textOf(findAll(root, byClass('legend-max'))[0] as XmlElement)).toBe('38');
    expect(textOf(findAll(root, byClass('legend-min'))[0] as XmlElement)).toBe('-38');
    expect(findAll(root, byClass('legend-zero'))).toHaveLength(1);
  });

  it('outlines exactly the P and N cells', () => {
    expect(findAll(root, byClass('marker-p')).map(at)).toEqual(['0,0', '1,1', '2,2', '3,1', '4,0']);
    expect(findAll(root, byClass('marker-n')).map(at)).toEqual(['0,2', '1,3', '2,1', '3,0', '4,3']);
  });

  it('prints values inside cells of a small grid', () => {
    const printed = findAll(root, byClass('values'))[0] as XmlElement;
    expect(findAll(printed, byName('text')).map(textOf)).toEqual(values.flat().map(String));
  });

  it('keeps 32 x 32 legible: every cell, every row and column label, no in-cell values', () => {
    const big = Array.from({ length: 32 }, (_, r) => Array.from({ length: 32 }, (_, c) => Math.sin(r * 32 + c)));
    const bigRoot = parseXml(renderHeatmapSvg({ title: 't', values: big, scale: 'sequential' }));
    const bigCells = findAll(bigRoot, byClass('cell'));
    expect(bigCells).toHaveLength(1024);
    expect(Number(bigCells[0]?.attrs.width)).toBeGreaterThanOrEqual(16);
    expect(findAll(bigRoot, byClass('values'))).toHaveLength(0);
    const axis = findAll(bigRoot, byClass('axis'))[0] as XmlElement;
    expect(findAll(axis, byName('text'))).toHaveLength(64);
    expect(findAll(bigRoot, byClass('marker-p'))).toHaveLength(0);
  });

  it('maps min and max to the ends of the sequential scale; log scale greys out non-positive values', () => {
    // 1, 2, 3, 5 sit at t = 0, 1/4, 1/2, 1 of the scale, i.e. on stops 0, 2, 4, 8 of 9.
    const seq = findAll(parseXml(renderHeatmapSvg({ title: 't', values: [[1, 2], [3, 5]], scale: 'sequential' })), byClass('cell'));
    expect(seq.map((c) => c.attrs.fill)).toEqual([SEQUENTIAL_STOPS[0], SEQUENTIAL_STOPS[2], SEQUENTIAL_STOPS[4], SEQUENTIAL_STOPS[8]]);
    const log = findAll(parseXml(renderHeatmapSvg({ title: 't', values: [[1, 10], [100, 0]], scale: 'sequential-log' })), byClass('cell'));
    expect(log.map((c) => c.attrs.fill)).toEqual([SEQUENTIAL_STOPS[0], SEQUENTIAL_STOPS[4], SEQUENTIAL_STOPS[8], '#d0d0d0']);
    expect(tooltipOf(log[3] as XmlElement)).toBe('layer 1, head 1: n/a');
  });

  it('escapes markup in titles and labels', () => {
    const nasty = `<script>&"'`;
    const r = parseXml(renderHeatmapSvg({ title: `model ${nasty}`, values: [[1]], scale: 'diverging', rowNames: [nasty], columnNames: [nasty], rowAxis: nasty }));
    expect(r.attrs['aria-label']).toBe(`model ${nasty}`);
    expect(textOf(findAll(r, byClass('plot-title'))[0] as XmlElement)).toBe(`model ${nasty}`);
    expect(tooltipOf(findAll(r, byClass('cell'))[0] as XmlElement)).toBe(`${nasty} ${nasty}, head ${nasty}: 1`);
    expect(findAll(r, byName('script'))).toHaveLength(0);
  });

  it('rejects ragged rows and selections outside the grid', () => {
    expect(() => renderHeatmapSvg({ title: 't', values: [[1, 2], [3]], scale: 'diverging' })).toThrow(RangeError);
    expect(() => renderHeatmapSvg({ title: 't', values: [[1, 2]], scale: 'diverging', positive: [[2]] })).toThrow(RangeError);
    expect(() => renderHeatmapSvg({ title: 't', values: [[1, 2]], scale: 'diverging', negative: [[0], [1]] })).toThrow(RangeError);
  });
});
