import { describe, expect, it } from 'vitest';
import { formatTickLabels, linearTicks, logTicks, makeScale, niceStep } from '../../src/report/axis-scale.js';
import { DIVERGING_STOPS, SEQUENTIAL_STOPS, divergingColor, interpolateStops, sequentialColor, textColorOn } from '../../src/report/color-scale.js';

describe('axis ticks', () => {
  it('picks 1-2-5 steps', () => {
    expect(niceStep(1.32)).toBe(1);
    expect(niceStep(0.23)).toBe(0.2);
    expect(niceStep(4.5)).toBe(5);
    expect(niceStep(8)).toBe(10);
    expect(niceStep(31.3)).toBe(50);
  });

  it('covers the range with whole ticks', () => {
    expect(linearTicks(1.3, 7.9, 5)).toEqual({ domain: [1, 8], ticks: [1, 2, 3, 4, 5, 6, 7, 8], labels: ['1', '2', '3', '4', '5', '6', '7', '8'] });
    expect(linearTicks(-94, 94, 6).ticks).toEqual([-100, -50, 0, 50, 100]);
    // binary noise removed: 3 * 0.1 is 0.30000000000000004
    expect(linearTicks(0, 0.3, 3)).toEqual({ domain: [0, 0.3], ticks: [0, 0.1, 0.2, 0.3], labels: ['0', '0.1', '0.2', '0.3'] });
    expect(linearTicks(5, 5, 5).domain).toEqual([2, 8]);
    expect(linearTicks(0, 0, 5).domain).toEqual([-1, 1]);
  });

  it('labels large ticks with suffixes and precision following the step', () => {
    expect(linearTicks(0, 20000, 4).labels).toEqual(['0', '5k', '10k', '15k', '20k']);
    expect(linearTicks(0, 3e9, 6).labels).toEqual(['0', '0.5B', '1B', '1.5B', '2B', '2.5B', '3B']);
    expect(formatTickLabels([1000, 1500, 2000], 500)).toEqual(['1,000', '1,500', '2,000']);
    expect(formatTickLabels([-0.5, 0, 0.5], 0.5)).toEqual(['-0.5', '0', '0.5']);
  });

  it('puts log ticks on decades, then 1-2-5, then linear steps', () => {
    expect(logTicks(0.01, 1000)).toEqual({ domain: [0.01, 1000], ticks: [0.01, 0.1, 1, 10, 100, 1000], labels: ['0.01', '0.1', '1', '10', '100', '1,000'] });
    expect(logTicks(5, 30).ticks).toEqual([5, 10, 20]);
    expect(logTicks(2.5, 9.5).ticks).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(logTicks(5.5, 5.9)).toEqual({ domain: [5.5, 5.9], ticks: [5.5, 5.6, 5.7, 5.8, 5.9], labels: ['5.5', '5.6', '5.7', '5.8', '5.9'] });
  });

  it('maps values to pixels', () => {
    expect(makeScale([0, 10], [100, 200])(5)).toBe(150);
    expect(makeScale([0, 10], [200, 100])(10)).toBe(100);
    expect(makeScale([1, 100], [0, 100], true)(10)).toBe(50);
  });
});

describe('colour scales', () => {
  it('has the diverging endpoints at ±max and white at 0', () => {
    expect(divergingColor(-38, 38)).toBe(DIVERGING_STOPS[0]);
    expect(divergingColor(38, 38)).toBe(DIVERGING_STOPS[10]);
    expect(divergingColor(0, 38)).toBe('#f7f7f7');
    expect(divergingColor(-100, 38)).toBe('#053061');
    expect(divergingColor(5, 0)).toBe('#f7f7f7');
  });

  it('has the sequential endpoints at min and max', () => {
    expect(sequentialColor(0.2, 0.2, 17)).toBe('#440154');
    expect(sequentialColor(17, 0.2, 17)).toBe('#fde725');
    expect(SEQUENTIAL_STOPS[8]).toBe('#fde725');
  });

  it('interpolates in between and picks readable text', () => {
    expect(interpolateStops(['#000000', '#ffffff'], 0.5)).toBe('#808080');
    expect(interpolateStops(['#000000', '#ff0000', '#ffffff'], 0.75)).toBe('#ff8080');
    expect(textColorOn('#053061')).toBe('#ffffff');
    expect(textColorOn('#f7f7f7')).toBe('#000000');
    expect(textColorOn('#fde725')).toBe('#000000');
  });
});
