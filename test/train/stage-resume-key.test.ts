// A checkpoint refused on --resume names what changed; where the entry is a digest that several
// options decide (the held-out set: --seed, --eval-samples, --eval-data), it names those options.
import { describe, expect, it } from 'vitest';
import { resumeKeyChanges, type ResumeKey } from '../../src/train/stage-resume-key.js';

describe('resumeKeyChanges', () => {
  const saved: ResumeKey = { method: 'vanilla', 'batch size': 2, 'held-out data': 'sha256:17fdf433e7c1f82d', 'input model': 'sha256:aaaa' };

  it('names the options that decide the held-out set (a changed --seed shows up there)', () => {
    expect(resumeKeyChanges(saved, { ...saved, 'held-out data': 'sha256:74d3f942aeebaab9' })).toEqual([
      'held-out data "sha256:17fdf433e7c1f82d" then, "sha256:74d3f942aeebaab9" now (the held-out sequences differ: were --eval-samples, --seed (which draws that sample; the held-out split is drawn with seed 0 whatever the --seed), --eval-data, --seq-len or the data changed?)',
    ]);
  });

  it('names plain settings by their values only, and the input model with its likely cause', () => {
    expect(resumeKeyChanges(saved, { ...saved, 'batch size': 4, 'input model': 'sha256:bbbb' })).toEqual([
      'batch size 2 then, 4 now',
      'input model "sha256:aaaa" then, "sha256:bbbb" now (another model, or its files changed?)',
    ]);
  });

  it('compares only what both recorded', () => {
    expect(resumeKeyChanges(undefined, saved)).toEqual([]);
    expect(resumeKeyChanges({ method: 'vanilla' }, { ...saved, 'batch size': 8 })).toEqual([]);
  });
});
