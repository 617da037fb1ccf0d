/**
 * The held-out perplexity table `apex run` prints at the end: before training, after every
 * stage, and the vanilla baseline after the same number of tokens, one row per stage.
 */
import { formatCount, formatPercent, formatPerplexity } from '../report/number-format.js';
import { renderTerminalTable } from '../report/terminal-table.js';
import type { RunSummary } from './run-summary.js';

export function renderPerplexityTable(s: RunSummary, maxWidth?: number): string {
  const method = s.method === 'apex' ? `APEX (${s.setting})` : s.method;
  const baseline = s.baseline?.stages ?? [];
  let tokens = 0;
  const rows = [
    ['before training', 0, formatPerplexity(s.before.perplexity), ...(baseline.length > 0 ? [formatPerplexity(s.before.perplexity), ''] : [])],
    ...s.stages.map((st, i) => {
      tokens += st.tokens;
      const b = baseline[i];
      return [
        `after stage ${st.stage}`,
        formatCount(tokens),
        formatPerplexity(st.eval.perplexity),
        ...(baseline.length > 0 ? [b ? formatPerplexity(b.eval.perplexity) : null, b ? formatPercent(st.eval.perplexity / b.eval.perplexity - 1) : null] : []),
      ];
    }),
  ];
  const columns = ['held-out perplexity', 'tokens trained', method, ...(baseline.length > 0 ? ['vanilla', 'vs vanilla'] : [])];
  const caption = `${formatCount(s.before.sequences)} held-out sequences, ${formatCount(s.before.tokens)} predicted tokens; lower is better`;
  return `${renderTerminalTable({ columns, rows, ...(maxWidth !== undefined ? { maxWidth } : {}) })}\n(${caption})`;
}
