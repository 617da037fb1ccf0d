import { describe, expect, it } from 'vitest';
import { renderLineChartSvg, smoothSeries, thinSeries, type LinePoint } from '../../src/report/svg-line-chart.js';
import { byClass, byName, findAll, parseXml, textOf, tooltipOf, type XmlElement } from './xml-tree.js';

/** Vertices of a path of M/L commands, grouped by subpath. */
function subpaths(d: string): [number, number][][] {
  return d.split('M').filter(Boolean).map((part) => part.split('L').map((xy) => xy.split(' ').map(Number) as [number, number]));
}

const pathOf = (root: XmlElement, series: number) => {
  const g = findAll(root, (e) => e.attrs.class === 'series' && e.attrs['data-series'] === String(series))[0] as XmlElement;
  return findAll(g, byName('path'))[0]?.attrs.d ?? '';
};

describe('renderLineChartSvg', () => {
  const train: LinePoint[] = Array.from({ length: 201 }, (_, s) => ({ x: s, y: 4 * Math.exp(-s / 60) + 2 }));
  const evals: LinePoint[] = [0, 50, 100, 150, 200].map((s) => ({ x: s, y: 4.2 * Math.exp(-s / 70) + 2.1 }));
  const chart = renderLineChartSvg({
    title: 'Loss <APEX> & "vanilla"',
    xLabel: 'step',
    yLabel: 'loss',
    series: [
      { name: 'train loss', points: train },
      { name: 'eval loss', points: evals, markers: true, dashed: true },
      { name: 'broken', points: [{ x: 0, y: 3 }, { x: 10, y: Number.NaN }, { x: 20, y: 3.5 }, { x: 30, y: 3.2 }] },
    ],
    stageBoundaries: [{ x: 100, label: 'stage 2' }],
  });
  const root = parseXml(chart);

  it('draws every point of short series, markers with tooltips, and breaks lines at NaN', () => {
    expect(subpaths(pathOf(root, 0))).toHaveLength(1);
    expect(subpaths(pathOf(root, 0))[0]).toHaveLength(201);
    expect(subpaths(pathOf(root, 1))[0]).toHaveLength(5);
    const points = findAll(root, byClass('point'));
    expect(points).toHaveLength(5);
    expect(tooltipOf(points[2] as XmlElement)).toBe(`eval loss @ 100: ${(4.2 * Math.exp(-100 / 70) + 2.1).toPrecision(4)}`);
    expect(subpaths(pathOf(root, 2)).map((s) => s.length)).toEqual([1, 2]);
  });

  it('puts larger values higher, x in order, and the stage boundary at its step', () => {
    const [line] = subpaths(pathOf(root, 0));
    const first = line![0]!;
    const last = line![200]!;
    expect(first[1]).toBeLessThan(last[1]); // loss falls: first point is higher on screen (smaller y)
    expect(line!.every((p, i) => i === 0 || p[0] > line![i - 1]![0])).toBe(true);
    const boundary = findAll(root, byClass('stage-boundary'));
    expect(boundary).toHaveLength(1);
    expect(Number(boundary[0]?.attrs.x1)).toBeCloseTo(line![100]![0], 1);
  });

  it('labels the legend with escaped names', () => {
    const legend = findAll(root, byClass('legend'))[0] as XmlElement;
    expect(findAll(legend, byName('text')).map(textOf)).toEqual(['train loss', 'eval loss', 'broken', 'stage boundary']);
    expect(textOf(findAll(root, byClass('plot-title'))[0] as XmlElement)).toBe('Loss <APEX> & "vanilla"');
  });

  it('drops non-positive values on a log axis and ticks it in log steps', () => {
    const log = parseXml(renderLineChartSvg({
      title: 'ppl', xLabel: 'tokens', yLabel: 'perplexity', logY: true,
      series: [{ name: 'ppl', points: [{ x: 0, y: 0 }, { x: 1e6, y: 300 }, { x: 2e6, y: 30 }, { x: 3e6, y: 6 }] }],
    }));
    expect(subpaths(pathOf(log, 0)).map((s) => s.length)).toEqual([3]);
    const axis = findAll(log, byClass('axis'))[0] as XmlElement;
    const labels = findAll(axis, byName('text')).map(textOf);
    expect(labels).toEqual(expect.arrayContaining(['10', '100', '1M', '2M', '3M']));
    expect(labels).not.toContain('0'); // the dropped point at x = 0 does not stretch the x axis
    // equal ratios are equal distances on a log axis: 300 → 30 spans as much as 100 → 10
    const [[, y300], [, y30]] = subpaths(pathOf(log, 0))[0]!.slice(0, 2) as [number, number][];
    const tickY = (label: string) => {
      const t = findAll(axis, (e) => e.name === 'text' && textOf(e) === label)[0] as XmlElement;
      return Number(t.attrs.y);
    };
    expect(y30! - y300!).toBeCloseTo(tickY('10') - tickY('100'), 1);
  });

  it('says so when there is nothing to draw', () => {
    const empty = parseXml(renderLineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'a', points: [] }] }));
    expect(findAll(empty, (e) => e.name === 'text' && textOf(e) === 'no data')).toHaveLength(1);
  });
});

describe('smoothing', () => {
  it('is a debiased exponential moving average', () => {
    // weight 0.5: averages 0.5*2 = 1 → /0.5 = 2; 0.5*1 + 0.5*4 = 2.5 → /0.75; 0.5*2.5 + 0.5*2 = 2.25 → /0.875
    const s = smoothSeries([{ x: 0, y: 2 }, { x: 1, y: 4 }, { x: 2, y: 2 }], 0.5);
    expect(s.map((p) => p.x)).toEqual([0, 1, 2]);
    expect(s[0]!.y).toBeCloseTo(2, 12);
    expect(s[1]!.y).toBeCloseTo(2.5 / 0.75, 12);
    expect(s[2]!.y).toBeCloseTo(2.25 / 0.875, 12);
  });

  it('draws the raw line faint under the smoothed one', () => {
    const points = Array.from({ length: 50 }, (_, i) => ({ x: i, y: 3 + (i % 2 ? 0.5 : -0.5) }));
    const root = parseXml(renderLineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'train', points, smoothing: 0.9 }] }));
    const paths = findAll(root, byName('path'));
    expect(paths.map((p) => p.attrs.class ?? 'smoothed')).toEqual(['raw', 'smoothed']);
    expect(paths[0]!.attrs['stroke-opacity']).toBe('0.25');
    const spread = (d: string) => {
      const ys = subpaths(d)[0]!.map((p) => p[1]);
      return Math.max(...ys.slice(10)) - Math.min(...ys.slice(10));
    };
    expect(spread(paths[1]!.attrs.d!)).toBeLessThan(spread(paths[0]!.attrs.d!) / 4);
  });
});

describe('thinSeries', () => {
  it('keeps short series and thins long ones to first/min/max/last per bucket', () => {
    const short = Array.from({ length: 40 }, (_, i) => ({ x: i, y: i }));
    expect(thinSeries(short, 10)).toEqual(short);
    const long = Array.from({ length: 10_000 }, (_, i) => ({ x: i, y: Math.sin(i) + (i === 5_432 ? 9 : 0) - (i === 777 ? 9 : 0) }));
    const thin = thinSeries(long, 100);
    expect(thin.length).toBeLessThanOrEqual(400);
    expect(thin[0]).toEqual(long[0]);
    expect(thin[thin.length - 1]).toEqual(long[9_999]);
    expect(thin).toContainEqual(long[5_432]);
    expect(thin).toContainEqual(long[777]);
    expect(thin.every((p, i) => i === 0 || p.x > thin[i - 1]!.x)).toBe(true);
  });
});
