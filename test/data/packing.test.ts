import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { chatSequences, packDocuments } from '../../src/train/data-packing.js';
import { splitLongText } from '../../src/train/data-sources.js';
import { loadSequences } from '../../src/train/data.js';

const rows = (seqs: Int32Array[]) => seqs.map((s) => Array.from(s));

describe('packDocuments', () => {
  it('joins documents with EOS and starts every sequence with BOS (hand-checked)', () => {
    // stream: 10 11 12 E 20 21 E 30 31 32 33  (11 tokens), seqLen 4 → chunks of 3, tail of 2 dropped
    const docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33]];
    expect(rows(packDocuments(docs, 4, 1, 2))).toEqual([
      [1, 10, 11, 12],
      [1, 2, 20, 21],
      [1, 2, 30, 31],
    ]);
  });

  it('without BOS, chunks are seqLen long; without EOS, documents touch', () => {
    expect(rows(packDocuments([[10, 11, 12], [20, 21]], 3, undefined, 2))).toEqual([
      [10, 11, 12],
      [2, 20, 21],
    ]);
    expect(rows(packDocuments([[10, 11], [20, 21]], 3, 1, undefined))).toEqual([[1, 10, 11], [1, 20, 21]]);
  });

  it('gives nothing when the stream is shorter than one sequence', () => {
    expect(packDocuments([[5, 6]], 4, 1, 2)).toEqual([]);
  });
});

describe('chatSequences', () => {
  it('truncates, pads and masks (position 0 never a target)', () => {
    const examples = [
      { ids: [1, 5, 6, 7, 8], assistantMask: Uint8Array.from([1, 0, 0, 1, 1]) },
      { ids: [1, 5, 6, 7, 8, 9, 10], assistantMask: Uint8Array.from([0, 0, 0, 0, 0, 0, 1]) },
      { ids: [1, 5, 6, 7, 8, 9, 10], assistantMask: Uint8Array.from([0, 0, 1, 1, 1, 1, 1]) },
    ];
    const out = chatSequences(examples, 6, 0);
    expect(rows(out.sequences)).toEqual([
      [1, 5, 6, 7, 8, 0],
      [1, 5, 6, 7, 8, 9],
    ]);
    expect(out.lossMasks.map((m) => Array.from(m))).toEqual([
      [0, 0, 0, 1, 1, 0],
      [0, 0, 1, 1, 1, 1],
    ]);
    expect(out.lengths).toEqual([5, 6]);
    // The second example's only assistant token falls past seqLen: dropped.
    expect(out.dropped).toBe(1);
  });
});

describe('splitLongText', () => {
  it('keeps short texts whole and cuts long ones at paragraph breaks into pieces of about the target', () => {
    expect(splitLongText('short text', 10)).toEqual(['short text']);
    const paragraphs = Array.from({ length: 12 }, (_, i) => `Paragraph ${i} ${'x'.repeat(20)}.`);
    const text = paragraphs.join('\n\n');
    const pieces = splitLongText(text, 64);
    expect(pieces.join('')).toBe(text);
    for (const p of pieces.slice(0, -1)) {
      expect(p.length).toBeGreaterThanOrEqual(64);
      expect(p.endsWith('\n\n')).toBe(true);
    }
    expect(pieces.length).toBeGreaterThan(2);
  });

  it('falls back to sentence ends in a text without line breaks', () => {
    const text = Array.from({ length: 40 }, (_, i) => `Sentence number ${i} ends here.`).join(' ');
    const pieces = splitLongText(text, 100);
    expect(pieces.join('')).toBe(text);
    for (const p of pieces.slice(0, -1)) expect(p).toMatch(/\. $/);
  });

  it('a text without any break is cut at the window, never inside a character outside the BMP', () => {
    for (const lead of ['', 'a']) {
      const text = lead + '🙂'.repeat(200);
      const pieces = splitLongText(text, 50);
      expect(pieces.join('')).toBe(text);
      expect(pieces.length).toBeGreaterThan(2);
      // Each piece is valid UTF-16: encoding it loses nothing (a lone surrogate becomes U+FFFD).
      for (const p of pieces) expect(Buffer.from(p, 'utf8').toString('utf8')).toBe(p);
    }
  });
});

describe('packing with the real tokenizer', () => {
  it('BOS once at the start of each sequence, EOS between documents, exact lengths', async () => {
    const tok = (await loadTokenizer('fixtures/llama-mha-f32'))!;
    const dir = await mkdtemp(join(tmpdir(), 'apex-pack-'));
    const texts = ['In the beginning God created the heaven and the earth.', 'Fellow-Citizens of the Senate and House of Representatives:', 'And the earth was without form, and void.'];
    for (const [i, t] of texts.entries()) await writeFile(join(dir, `doc${i}.txt`), `${t}\n`);
    const seqLen = 8;
    const set = await loadSequences({ data: [dir], tokenizer: tok, seqLen, seed: 0 });
    const docs = texts.map((t) => tok.encode(t, { addSpecialTokens: false }));
    const stream = [...docs[0]!, 2, ...docs[1]!, 2, ...docs[2]!];
    const count = Math.floor(stream.length / (seqLen - 1));
    expect(set.sequences).toHaveLength(count);
    expect(set.lossMasks).toBeUndefined();
    set.sequences.forEach((s, k) => {
      expect(s).toHaveLength(seqLen);
      expect(Array.from(s)).toEqual([1, ...stream.slice(k * (seqLen - 1), (k + 1) * (seqLen - 1))]);
      expect(Array.from(s).filter((id) => id === 1)).toHaveLength(1);
    });
    expect(set.source).toMatchObject({ kind: 'text', documents: 3, tokens: count * seqLen, seqLen, split: 'all' });
    expect(set.source.sha256).toHaveLength(3);
  });
});
