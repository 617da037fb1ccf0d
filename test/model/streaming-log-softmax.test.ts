import { describe, expect, it } from 'vitest';
import { StreamingLogSoftmax } from '../../src/model/streaming-log-softmax.js';
import { Rng } from '../../src/util/rng.js';

describe('StreamingLogSoftmax', () => {
  it('gives the log-softmax of the whole row whatever the block split, large logits included', () => {
    const rng = new Rng(4);
    const V = 97;
    const rows = [Array.from({ length: V }, () => (rng.next() - 0.5) * 20), Array.from({ length: V }, (_, i) => (i === 60 ? 1000 : rng.next()))];
    const targets = [13, 60];
    const direct = rows.map((r, p) => {
      const m = Math.max(...r);
      return r[targets[p]!]! - (m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0)));
    });
    for (const block of [1, 7, 32, 97]) {
      const s = new StreamingLogSoftmax(2);
      for (let start = 0; start < V; start += block) {
        const parts = rows.map((r) => r.slice(start, start + block));
        const maxes = parts.map((p) => Math.max(...p));
        s.addBlock(maxes, parts.map((p, i) => p.reduce((a, v) => a + Math.exp(v - maxes[i]!), 0)));
        targets.forEach((t, p) => { if (t >= start && t < start + block) s.setTargetLogit(p, rows[p]![t]!); });
      }
      for (let p = 0; p < 2; p++) expect(Math.abs(s.targetLogprob(p) - direct[p]!)).toBeLessThan(1e-12);
    }
  });
});
