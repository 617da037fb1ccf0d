// Data records name bundled-corpus files independently of where apex is installed, so a run
// finished by one installation is not "new data" to another (a CI workspace, a global install).
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { builtinCorpus, installIndependentName } from '../../src/train/data-corpus.js';

it('a bundled file is builtin:<path in the corpus folder>, from this installation or another', () => {
  const here = builtinCorpus('in-domain')[0]!;
  const tail = here.split(/[\\/]fixtures[\\/]corpus[\\/]/)[1]!;
  expect(installIndependentName(here)).toBe(`builtin:${tail}`);
  expect(installIndependentName(join('/opt/elsewhere/apex/fixtures/corpus', tail))).toBe(`builtin:${tail}`);
  // Not a file of this installation's corpora, or not a corpus path at all: the path itself.
  expect(installIndependentName('/data/fixtures/corpus/mine.txt')).toBe('/data/fixtures/corpus/mine.txt');
  expect(installIndependentName('/data/train.jsonl')).toBe('/data/train.jsonl');
});
