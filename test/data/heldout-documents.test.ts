// A split's record of its held-out documents (heldout.json of a stage), checked against the
// split itself: the documents it lists, rebuilt by hand from the files into data of their own,
// give exactly the held-out set's sequences, and the rest exactly the training set's.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { formatHeldoutJson, indexRanges, type HeldoutDocuments } from '../../src/train/data-split.js';
import { loadSequences, type SequenceSet } from '../../src/train/data.js';

const tokenizer = async (): Promise<ApexTokenizer> => (await loadTokenizer('fixtures/llama-mha-f32'))!;
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

/** The listed indices of each file, expanded from their ranges. */
function listed(record: HeldoutDocuments): number[][] {
  return record.files.map((f) => f.heldout.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, k) => a + k)));
}

describe('the held-out documents of a split', () => {
  it('text: per file (path, sha256), the document indices of exactly the held-out set; the rest is the training set', async () => {
    const tok = await tokenizer();
    const dir = await mkdtemp(join(tmpdir(), 'apex-heldout-'));
    // Documents, as apex defines them: a JSONL record with non-empty "text" (a record with "" and a
    // blank line are none), a short text file whole and trimmed.
    const a = Array.from({ length: 9 }, (_, i) => `Alpha document ${i}: the quick brown fox ${'jumps '.repeat(i + 1)}over the dog.`);
    const b = 'A plain text file, read as one document of its own.';
    const c = Array.from({ length: 10 }, (_, i) => `Gamma record ${i} says ${'something '.repeat(10 - i)}else.`);
    const files = [join(dir, 'a.jsonl'), join(dir, 'b.txt'), join(dir, 'c.jsonl')];
    await writeFile(files[0]!, [...a.slice(0, 4).map((text) => JSON.stringify({ text })), JSON.stringify({ text: '' }), '', ...a.slice(4).map((text) => JSON.stringify({ text }))].join('\n') + '\n');
    await writeFile(files[1]!, `\n  ${b}\n\n`);
    await writeFile(files[2]!, c.map((text) => JSON.stringify({ text })).join('\n') + '\n');
    const documents = [a, [b], c];

    const options = { data: files, tokenizer: tok, seqLen: 8, seed: 0, heldoutFraction: 0.25, splitSeed: 3 };
    const held = await loadSequences({ ...options, split: 'heldout' });
    const train = await loadSequences({ ...options, split: 'train' });
    const record = held.heldout!;
    expect(record).toMatchObject({ schema: 'apex.heldout/1', fraction: 0.25, seed: 3, documents: 20, heldout: 5 });
    expect(record.files.map((f) => [f.path, f.documents])).toEqual([[files[0], 9], [files[1], 1], [files[2], 10]]);
    expect(record.files.map((f) => f.sha256)).toEqual(await Promise.all(files.map(sha256)));
    expect(record.files.map((f) => f.path)).toEqual(held.source.paths);
    expect(train.heldout).toEqual(record);
    const indices = listed(record);
    expect(indices.flat()).toHaveLength(5);
    expect(indices.filter((l) => l.length > 0).length).toBeGreaterThan(1); // the split crosses files

    // The listed documents (and the others), as data of their own: the same sequences as the split's.
    const rebuilt = async (name: string, keep: (file: number, doc: number) => boolean): Promise<SequenceSet> => {
      const texts = documents.flatMap((docs, f) => docs.filter((_, d) => keep(f, d)));
      await writeFile(join(dir, name), texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
      return loadSequences({ data: [join(dir, name)], tokenizer: tok, seqLen: 8, seed: 0 });
    };
    const isHeld = (f: number, d: number) => indices[f]!.includes(d);
    expect((await rebuilt('held.jsonl', isHeld)).sequences).toEqual(held.sequences);
    expect((await rebuilt('train.jsonl', (f, d) => !isHeld(f, d))).sequences).toEqual(train.sequences);
    expect(held.source.documents).toBe(5);

    // All the data (no split): nothing held out, nothing listed.
    expect((await loadSequences({ ...options, split: 'all' })).heldout).toBeUndefined();
  });

  it('chat: a conversation is a document; token ids: a row is one', async () => {
    const tok = await tokenizer();
    const dir = await mkdtemp(join(tmpdir(), 'apex-heldout-'));
    const conversations = Array.from({ length: 8 }, (_, i) => ({ messages: [{ role: 'user', content: `question number ${i}` }, { role: 'assistant', content: `answer ${'x'.repeat(i + 1)}` }] }));
    const chat = join(dir, 'chat.jsonl');
    await writeFile(chat, conversations.map((c) => JSON.stringify(c)).join('\n') + '\n');
    const held = await loadSequences({ data: [chat], tokenizer: tok, seqLen: 48, seed: 0, split: 'heldout', heldoutFraction: 0.3, splitSeed: 5 });
    const [indices] = listed(held.heldout!);
    expect(indices).toHaveLength(2);
    await writeFile(join(dir, 'held.jsonl'), indices!.map((i) => JSON.stringify(conversations[i])).join('\n') + '\n');
    const alone = await loadSequences({ data: [join(dir, 'held.jsonl')], tokenizer: tok, seqLen: 48, seed: 0 });
    expect(alone.sequences).toEqual(held.sequences);
    expect(alone.lossMasks).toEqual(held.lossMasks);

    const rows = Array.from({ length: 6 }, (_, r) => Int32Array.from({ length: 4 }, (_, t) => 10 * r + t + 1));
    const ids = join(dir, 'ids.safetensors');
    await writeSafetensors(ids, [i32Tensor('input_ids', [6, 4], Int32Array.from(rows.flatMap((r) => Array.from(r))))]);
    const heldIds = await loadSequences({ inputIds: ids, seqLen: 4, seed: 0, split: 'heldout', heldoutFraction: 0.4, splitSeed: 1 });
    expect(heldIds.heldout!.files).toEqual([{ path: ids, sha256: await sha256(ids), documents: 6, heldout: heldIds.heldout!.files[0]!.heldout }]);
    expect(listed(heldIds.heldout!)[0]!.map((r) => rows[r])).toEqual(heldIds.sequences);
  });

  it('ranges are ascending inclusive runs; heldout.json puts each file on one line', () => {
    expect(indexRanges([])).toEqual([]);
    expect(indexRanges([0, 2, 3, 4, 9, 11, 12])).toEqual([[0, 0], [2, 4], [9, 9], [11, 12]]);
    const record: HeldoutDocuments = { schema: 'apex.heldout/1', fraction: 0.05, seed: 0, documents: 30, heldout: 3, files: [{ path: 'a.txt', sha256: 'ab', documents: 10, heldout: [[2, 3]] }, { path: 'b.txt', sha256: 'cd', documents: 20, heldout: [[7, 7]] }] };
    const text = formatHeldoutJson(record);
    expect(JSON.parse(text)).toEqual(record);
    expect(text.split('\n')).toContain('    {"path":"b.txt","sha256":"cd","documents":20,"heldout":[[7,7]]}');
  });
});
