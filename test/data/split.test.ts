import { describe, expect, it } from 'vitest';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../../src/errors.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { loadSequences } from '../../src/train/data.js';
import { heldoutIndices, sampleIndices, selectSplit } from '../../src/train/data-split.js';

describe('held-out split', () => {
  it('holds out a seeded 5% (at least one), disjoint from train, covering everything', () => {
    const items = Array.from({ length: 139 }, (_, i) => `doc${i}`);
    const train = selectSplit(items, 'train', 0.05, 0);
    const heldout = selectSplit(items, 'heldout', 0.05, 0);
    expect(heldout).toHaveLength(7); // round(139 × 0.05)
    expect(train).toHaveLength(132);
    expect(train.filter((d) => heldout.includes(d))).toEqual([]);
    expect([...train, ...heldout].sort()).toEqual([...items].sort());
    // original order is kept inside each split
    expect(heldout).toEqual([...heldout].sort((a, b) => Number(a.slice(3)) - Number(b.slice(3))));
    expect(selectSplit(items, 'all', 0.05, 0)).toEqual(items);
  });

  it('is deterministic for a seed and moves with the seed', () => {
    expect([...heldoutIndices(100, 0.05, 3)]).toEqual([...heldoutIndices(100, 0.05, 3)]);
    expect([...heldoutIndices(100, 0.05, 3)].sort()).not.toEqual([...heldoutIndices(100, 0.05, 4)].sort());
  });

  it('holds out at least one and leaves at least one', () => {
    expect(heldoutIndices(3, 0.05, 0).size).toBe(1);
    expect(heldoutIndices(2, 0.9, 0).size).toBe(1);
    expect(() => heldoutIndices(1, 0.05, 0)).toThrow(InputError);
  });

  it('too few documents: the message names the data it counted (it said only "the data holds 1 document")', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apex-split-'));
    const text = join(dir, 'one.txt');
    await writeFile(text, 'Just one short document.');
    const tokenizer = (await loadTokenizer('fixtures/llama-mha-f32'))!;
    await expect(loadSequences({ data: [text], tokenizer, seqLen: 4, seed: 0, split: 'heldout' })).rejects.toMatchObject({
      code: 'TOO_FEW_DOCUMENTS',
      exit: 3,
      message: `the data (${text}) holds 1 document; a held-out split needs at least 2 (pass more data or a separate --eval-data)`,
    });
    const ids = join(dir, 'one-row.safetensors');
    const header = Buffer.from(JSON.stringify({ input_ids: { dtype: 'I32', shape: [1, 4], data_offsets: [0, 16] } }));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    await writeFile(ids, Buffer.concat([length, header, Buffer.from(Int32Array.from([1, 5, 6, 7]).buffer)]));
    await expect(loadSequences({ inputIds: ids, seqLen: 4, seed: 0, split: 'train' })).rejects.toMatchObject({ code: 'TOO_FEW_DOCUMENTS', message: expect.stringMatching(/^the data \(.*one-row\.safetensors\) holds 1 document;/) });
  });
});

describe('sampleIndices', () => {
  it('chooses k distinct indices, seeded, in ascending order', () => {
    const a = sampleIndices(50, 10, 1);
    expect(a).toHaveLength(10);
    expect(new Set(a).size).toBe(10);
    expect(a).toEqual([...a].sort((x, y) => x - y));
    expect(sampleIndices(50, 10, 1)).toEqual(a);
    expect(sampleIndices(50, 10, 2)).not.toEqual(a);
    expect(sampleIndices(5, 10, 1)).toEqual([0, 1, 2, 3, 4]);
    expect(sampleIndices(5, undefined, 1)).toEqual([0, 1, 2, 3, 4]);
  });
});
