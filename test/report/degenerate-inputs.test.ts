import { describe, expect, it } from 'vitest';
import { estimateTextWidth, fitText } from '../../src/report/svg-elements.js';
import { renderBarChartSvg } from '../../src/report/svg-bar-chart.js';
import { renderChannelDistributionSvg } from '../../src/report/svg-distribution.js';
import { renderHeatmapSvg } from '../../src/report/svg-heatmap.js';
import { renderLineChartSvg } from '../../src/report/svg-line-chart.js';
import { parseXml } from './xml-tree.js';

// Empty or constant data must still give a well-formed figure with no NaN/Infinity coordinates.
const clean = (svg: string) => {
  parseXml(svg);
  expect(svg).not.toMatch(/NaN|Infinity/);
};

describe('degenerate inputs', () => {
  it('renders empty and constant data', () => {
    clean(renderHeatmapSvg({ title: 't', values: [], scale: 'diverging' }));
    clean(renderHeatmapSvg({ title: 't', values: [[0, 0], [0, 0]], scale: 'diverging' }));
    clean(renderHeatmapSvg({ title: 't', values: [[2, 2]], scale: 'sequential-log' }));
    clean(renderHeatmapSvg({ title: 't', values: [[Number.NaN]], scale: 'sequential' }));
    clean(renderChannelDistributionSvg({ title: 't', scores: [] }));
    clean(renderChannelDistributionSvg({ title: 't', scores: [[5, 5, 5]], positive: [[0]], negative: [[1]] }));
    clean(renderChannelDistributionSvg({ title: 't', scores: [[Number.NaN]] }));
    clean(renderLineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', series: [] }));
    clean(renderLineChartSvg({ title: 't', xLabel: 'x', yLabel: 'y', logY: true, series: [{ name: 'a', points: [{ x: 1, y: 3 }] }] }));
    clean(renderBarChartSvg({ title: 't', yLabel: 'y', categories: [], series: [] }));
    clean(renderBarChartSvg({ title: 't', yLabel: 'y', categories: ['a'], series: [{ name: 's', values: [null] }] }));
  });

  it('fits text exactly as wide as the space without cutting it', () => {
    for (const word of ['vanilla', 'APEX full', 'stage boundary']) {
      expect(fitText(word, estimateTextWidth(word, 11), 11)).toBe(word);
    }
    expect(fitText('vanilla', estimateTextWidth('vanilla', 11) - 1, 11)).toBe('vanil…');
  });
});
