import { describe, expect, it } from 'vitest';
import { didYouMean, editDistance } from '../../src/util/did-you-mean.js';

describe('editDistance (Damerau-Levenshtein, optimal string alignment)', () => {
  it('matches hand-computed distances', () => {
    expect(editDistance('', '')).toBe(0);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3); // k→s, e→i, +g
    expect(editDistance('count', 'cout')).toBe(1);
    expect(editDistance('cnt', 'count')).toBe(2);
  });

  it('counts an adjacent transposition as one edit', () => {
    expect(editDistance('ab', 'ba')).toBe(1);
    expect(editDistance('setps', 'steps')).toBe(1);
    // optimal string alignment: no substring is edited twice, so "ca" → "abc" stays 3
    expect(editDistance('ca', 'abc')).toBe(3);
  });

  it('is symmetric', () => {
    for (const [a, b] of [['ratio', 'rank'], ['warmup', 'warmup_fraction'], ['lr', 'rl']] as const) {
      expect(editDistance(a, b)).toBe(editDistance(b, a));
    }
  });
});

describe('didYouMean', () => {
  const keys = ['count', 'steps', 'tokens', 'ratio', 'decay_k', 'score', 'random_selection', 'reverse'];

  it('suggests the closest key within typo distance', () => {
    expect(didYouMean('cout', keys)).toBe('count');
    expect(didYouMean('cnt', keys)).toBe('count');
    expect(didYouMean('setps', keys)).toBe('steps');
    expect(didYouMean('random-selection', keys)).toBe('random_selection');
    expect(didYouMean('Ratio', keys)).toBe('ratio');
  });

  it('suggests nothing for words that are not typos of a candidate', () => {
    expect(didYouMean('learning_rate', keys)).toBeUndefined();
    expect(didYouMean('foo', keys)).toBeUndefined();
    expect(didYouMean('x', [])).toBeUndefined();
  });
});
