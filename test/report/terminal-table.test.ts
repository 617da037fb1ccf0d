import { describe, expect, it } from 'vitest';
import { renderLayerSummaryTable, renderTerminalTable, truncateText } from '../../src/report/terminal-table.js';

describe('renderTerminalTable', () => {
  it('right-aligns numeric columns and left-aligns text', () => {
    const table = renderTerminalTable({
      columns: ['model', 'params', 'ppl', 'memory'],
      rows: [
        ['stories260K', '262,144', 5.75, '1.00 MiB'],
        ['tinyllama-1.1b', '1,100,048,384', 12.5, '2.05 GiB'],
        ['x', null, 100, '512 B'],
      ],
    });
    expect(table).toBe([
      'model                  params   ppl    memory',
      '--------------  -------------  ----  --------',
      'stories260K           262,144  5.75  1.00 MiB',
      'tinyllama-1.1b  1,100,048,384  12.5  2.05 GiB',
      'x                           –   100     512 B',
    ].join('\n'));
  });

  it('honours explicit alignment, per-column max width and the total width', () => {
    const rows = [['/very/long/path/to/a/model/checkpoint', 'done', 3]];
    expect(renderTerminalTable({ columns: [{ header: 'path', maxWidth: 12 }, { header: 'state', align: 'right' }, 'n'], rows })).toBe([
      'path          state  n',
      '------------  -----  -',
      '/very/long/…   done  3',
    ].join('\n'));
    // total 24: the text column shrinks, numbers keep their width
    expect(renderTerminalTable({ columns: ['path', 'state', 'n'], rows, maxWidth: 24 })).toBe([
      'path            state  n',
      '--------------  -----  -',
      '/very/long/pa…  done   3',
    ].join('\n'));
    for (const line of renderTerminalTable({ columns: ['path', 'state', 'n'], rows, maxWidth: 24 }).split('\n')) {
      expect(Array.from(line).length).toBeLessThanOrEqual(24);
    }
  });

  it('keeps rows on one line', () => {
    expect(renderTerminalTable({ columns: ['a'], rows: [['x\ny']] }).split('\n')).toEqual(['a', '---', 'x y']);
  });

  it('truncates with an ellipsis', () => {
    expect(truncateText('abcdef', 4)).toBe('abc…');
    expect(truncateText('abcd', 4)).toBe('abcd');
    expect(truncateText('abcd', 1)).toBe('…');
  });
});

describe('renderLayerSummaryTable', () => {
  it('lists P and N units and CVs per layer', () => {
    const table = renderLayerSummaryTable([
      { layer: 0, positive: [3], negative: [1], cvHeads: 0.41234, cvChannels: 1.2 },
      { layer: 10, positive: [12, 7], negative: [0, 31], cvHeads: 0.5, cvChannels: Number.NaN },
    ], { unitName: 'groups' });
    expect(table).toBe([
      'layer  P groups  N groups  CV groups  CV channels',
      '-----  --------  --------  ---------  -----------',
      '    0  3         1             0.412        1.200',
      '   10  12,7      0,31          0.500            –',
    ].join('\n'));
  });
});
