// The data order of training: every epoch reads each sequence exactly once, in a seeded
// order that differs between epochs; micro-batches run across epoch ends; a stream rebuilt
// from a saved position and Rng state continues identically. metrics.jsonl is cut back to a
// checkpoint's step on resume (a torn last line included). The score recorder leaves padding out.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BatchStream } from '../../src/train/batch-stream.js';
import { activationTokenWeights } from '../../src/train/score-recorder.js';
import { appendMetrics, readMetrics, truncateMetrics } from '../../src/train/metrics-log.js';
import { Rng } from '../../src/util/rng.js';
import { tempRun } from './stage-fixtures.js';

const { dir, cleanup } = tempRun('batches');
afterAll(cleanup);

describe('BatchStream', () => {
  it('reads each sequence once per epoch, reshuffling every epoch, across epoch ends', () => {
    const stream = new BatchStream(10, new Rng(1));
    const read = Array.from({ length: 10 }, () => stream.next(3)).flat(); // 30 = three epochs
    const epochs = [read.slice(0, 10), read.slice(10, 20), read.slice(20, 30)];
    for (const e of epochs) expect([...e].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(epochs[0]).not.toEqual(epochs[1]);
    expect(stream.position().epoch).toBe(2);
    expect(stream.position().index).toBe(10);
  });

  it('continues identically from a saved position and Rng state', () => {
    const rng = new Rng(7);
    const a = new BatchStream(5, rng);
    a.next(4);
    a.next(4);
    const position = a.position();
    const state = rng.state();
    const expected = [a.next(4), a.next(4), a.next(4)];
    const rebuilt = new BatchStream(5, Rng.fromState(state), position);
    expect([rebuilt.next(4), rebuilt.next(4), rebuilt.next(4)]).toEqual(expected);
  });

  it('the same seed gives the same order', () => {
    expect(new BatchStream(8, new Rng(3)).next(8)).toEqual(new BatchStream(8, new Rng(3)).next(8));
    expect(new BatchStream(8, new Rng(3)).next(8)).not.toEqual(new BatchStream(8, new Rng(4)).next(8));
  });
});

describe('metrics.jsonl', () => {
  it('truncation keeps the lines up to the checkpoint step and drops a torn line', async () => {
    const path = join(dir, 'metrics.jsonl');
    await appendMetrics(path, { step: 0, tokens: 0, eval_loss: 3, eval_ppl: 20, elapsed: 0 });
    for (let step = 1; step <= 4; step++) await appendMetrics(path, { step, tokens: 8 * step, loss: 3 - step / 10, elapsed: step });
    writeFileSync(path, `${readFileSync(path, 'utf8')}{"step":5,"tok`);
    expect((await readMetrics(path)).map((l) => l.step)).toEqual([0, 1, 2, 3, 4]);
    const kept = await truncateMetrics(path, 2);
    expect(kept.map((l) => l.step)).toEqual([0, 1, 2]);
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(3);
    await truncateMetrics(path, undefined);
    expect(await readMetrics(path)).toEqual([]);
  });
});

describe('token weights of the score recorder', () => {
  const source = { kind: 'jsonl-chat', paths: [], sha256: [], seqLen: 6, seed: 0, split: 'all', heldoutFraction: 0.05, splitSeed: 0, documents: 2, sequences: 2, tokens: 9 } as const;
  it('count every token of packed text and input ids', () => {
    const set = { seqLen: 6, sequences: [Int32Array.from([1, 2, 3, 4, 5, 6])], source };
    expect(Array.from(activationTokenWeights(set, 0))).toEqual([1, 1, 1, 1, 1, 1]);
  });
  it('stop after the last loss target of a chat sequence (the rest is padding)', () => {
    const set = {
      seqLen: 6,
      sequences: [Int32Array.from([1, 7, 8, 9, 0, 0]), Int32Array.from([1, 7, 8, 9, 10, 11])],
      lossMasks: [Uint8Array.from([0, 0, 1, 1, 0, 0]), Uint8Array.from([0, 0, 1, 0, 0, 1])],
      source,
    };
    expect(Array.from(activationTokenWeights(set, 0))).toEqual([1, 1, 1, 1, 0, 0]);
    expect(Array.from(activationTokenWeights(set, 1))).toEqual([1, 1, 1, 1, 1, 1]);
  });
  it('count a trailing non-assistant turn of a chat sequence: padding starts at its length', () => {
    const set = {
      seqLen: 6,
      sequences: [Int32Array.from([1, 7, 8, 9, 4, 0])],
      lossMasks: [Uint8Array.from([0, 0, 1, 0, 0, 0])],
      lengths: [5],
      source,
    };
    expect(Array.from(activationTokenWeights(set, 0))).toEqual([1, 1, 1, 1, 1, 0]);
  });
});
