/**
 * The token cache (src/train/token-cache.ts): a second load of the same data reads the tokens
 * from the cache and gives exactly the sequences a load without the cache gives; a changed data
 * file, tokenizer or chat template misses; a bad entry or an unwritable cache never fails a load.
 * vitest.config.ts turns the cache off for the suite; these tests turn it on in a temp folder.
 */
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { loadSequences, type LoadSequencesOptions, type SequenceSet } from '../../src/train/data.js';
import { tokenCacheDir } from '../../src/train/token-cache.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { sequenceSetDigest } from '../../src/train/trainer.js';

const FIXTURE = 'fixtures/llama-mha-f32';
let cacheRoot: string;
let saved: Record<string, string | undefined>;

beforeEach(async () => {
  saved = { APEX_TOKEN_CACHE: process.env.APEX_TOKEN_CACHE, APEX_CACHE_DIR: process.env.APEX_CACHE_DIR };
  cacheRoot = await mkdtemp(join(tmpdir(), 'apex-token-cache-'));
  process.env.APEX_CACHE_DIR = cacheRoot;
  delete process.env.APEX_TOKEN_CACHE;
});

afterEach(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

interface Loaded {
  set: SequenceSet;
  warnings: string[];
  progress: string[];
  /** tokenizer.encode calls the load made (0 when every file came from the cache). */
  encodes: number;
}

async function load(tokenizer: ApexTokenizer, options: Partial<LoadSequencesOptions>, cache = true): Promise<Loaded> {
  const before = process.env.APEX_TOKEN_CACHE;
  if (!cache) process.env.APEX_TOKEN_CACHE = '0';
  let encodes = 0;
  const counting: ApexTokenizer = { ...tokenizer, encode: (text, o) => (encodes++, tokenizer.encode(text, o)) };
  const warnings: string[] = [];
  const progress: string[] = [];
  try {
    const set = await loadSequences({ tokenizer: counting, seqLen: 32, seed: 0, onWarning: (m) => warnings.push(m), onProgress: (m) => progress.push(m), ...options });
    return { set, warnings, progress, encodes };
  } finally {
    if (before === undefined) delete process.env.APEX_TOKEN_CACHE;
    else process.env.APEX_TOKEN_CACHE = before;
  }
}

/** Same sequences, masks, lengths, record, warnings and digest (toEqual compares typed arrays element by element, and their types). */
function expectSame(a: Loaded, b: Loaded): void {
  expect(a.set).toEqual(b.set);
  expect(a.set.sequences.every((s) => s instanceof Int32Array)).toBe(true);
  expect(sequenceSetDigest(a.set)).toBe(sequenceSetDigest(b.set));
  expect(a.warnings).toEqual(b.warnings);
}

async function entries(): Promise<string[]> {
  try {
    return (await readdir(join(cacheRoot, 'tokens'))).filter((n) => n.endsWith('.safetensors'));
  } catch {
    return [];
  }
}

async function tempData(): Promise<string> {
  return await mkdtemp(join(tmpdir(), 'apex-token-data-'));
}

/** Chat conversations, some long enough to be truncated at 32 tokens (and so warned about). */
function chatLines(n: number, tag: string): string {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: 'user', content: `Question ${tag} ${i}: what is ${i} plus ${i}?` },
        { role: 'assistant', content: i % 3 === 0 ? `A long answer ${tag}: ${'and so on '.repeat(i + 2)}` : `It is ${2 * i}.` },
        ...(i % 2 === 0 ? [{ role: 'user', content: 'Thanks.' }, { role: 'assistant', content: 'You are welcome.' }] : []),
      ],
    }),
  ).join('\n');
}

const tok = async (dir = FIXTURE): Promise<ApexTokenizer> => (await loadTokenizer(dir))!;

describe('token cache', () => {
  it('uses $APEX_CACHE_DIR/tokens, else XDG_CACHE_HOME or ~/.cache, and is off for 0/false/no/off', () => {
    expect(tokenCacheDir({ APEX_CACHE_DIR: '/c' })).toBe('/c/tokens');
    expect(tokenCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/apex/tokens');
    for (const off of ['0', 'false', 'NO', 'off']) expect(tokenCacheDir({ APEX_CACHE_DIR: '/c', APEX_TOKEN_CACHE: off })).toBeUndefined();
    expect(tokenCacheDir({ APEX_CACHE_DIR: '/c', APEX_TOKEN_CACHE: '1' })).toBe('/c/tokens');
  });

  it('text: the second load reads every file from the cache and gives the same set as no cache, for each split', async () => {
    const tokenizer = await tok();
    const data = ['fixtures/corpus/in-domain', 'fixtures/data/text-sample.jsonl'];
    const plain = await load(tokenizer, { data, split: 'train' }, false);
    const cold = await load(tokenizer, { data, split: 'train' });
    const files = (await entries()).length;
    expect(files).toBeGreaterThan(1);
    expect(cold.encodes).toBeGreaterThan(0);
    expect(cold.progress.at(-1)).toMatch(/^tokenized \d+ files, 0 from the token cache$/);
    const warm = await load(tokenizer, { data, split: 'train' });
    expect(warm.encodes).toBe(0);
    expect(warm.progress.at(-1)).toBe(`tokenized ${files} files, ${files} from the token cache`);
    expectSame(cold, plain);
    expectSame(warm, plain);
    // Entries hold whole files, so the other split, and a sampled load, hit too.
    const heldWarm = await load(tokenizer, { data, split: 'heldout', samples: 3, seed: 5 });
    expect(heldWarm.encodes).toBe(0);
    expectSame(heldWarm, await load(tokenizer, { data, split: 'heldout', samples: 3, seed: 5 }, false));
  });

  it('chat: the second load is a hit with the same sequences, masks, lengths, record and truncation warnings', async () => {
    const tokenizer = await tok();
    const dir = await tempData();
    await writeFile(join(dir, 'b.jsonl'), chatLines(12, 'b'));
    const data = ['fixtures/data/chat-sample.jsonl', join(dir, 'b.jsonl')];
    const plain = await load(tokenizer, { data, split: 'train' }, false);
    expect(plain.warnings.some((w) => /lost assistant tokens to truncation/.test(w))).toBe(true);
    const cold = await load(tokenizer, { data, split: 'train' });
    const warm = await load(tokenizer, { data, split: 'train' });
    expect(cold.encodes).toBeGreaterThan(0);
    expect(warm.encodes).toBe(0);
    expect(warm.progress.at(-1)).toBe('tokenized 2 files, 2 from the token cache');
    expect(warm.set.lossMasks).toBeDefined();
    expectSame(cold, plain);
    expectSame(warm, plain);
    const held = await load(tokenizer, { data, split: 'heldout' });
    expect(held.encodes).toBe(0);
    expectSame(held, await load(tokenizer, { data, split: 'heldout' }, false));
  });

  it('re-tokenizes only the data file that changed', async () => {
    const tokenizer = await tok();
    const dir = await tempData();
    await writeFile(join(dir, 'a.txt'), 'The first file has a few words in it, enough for a sequence or two of tokens.');
    await writeFile(join(dir, 'b.txt'), 'The second file says something else entirely, about rivers and the sea.');
    await load(tokenizer, { data: [dir], seqLen: 8 });
    await writeFile(join(dir, 'b.txt'), 'The second file now says something new: mountains, and snow on them.');
    const after = await load(tokenizer, { data: [dir], seqLen: 8 });
    expect(after.progress.at(-1)).toBe('tokenized 2 files, 1 from the token cache');
    expect(after.encodes).toBe(1); // b.txt's one document
    expectSame(after, await load(tokenizer, { data: [dir], seqLen: 8 }, false));
    expect(await entries()).toHaveLength(3);
  });

  it('misses when the chat template in tokenizer_config.json changes', async () => {
    const model = await tempData();
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) await copyFile(join(FIXTURE, f), join(model, f));
    const data = ['fixtures/data/chat-sample.jsonl'];
    await load(await tok(model), { data });
    expect((await load(await tok(model), { data })).encodes).toBe(0);
    const config = JSON.parse(await readFile(join(model, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    config.chat_template = "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}";
    await writeFile(join(model, 'tokenizer_config.json'), JSON.stringify(config));
    const changed = await load(await tok(model), { data });
    expect(changed.encodes).toBeGreaterThan(0);
    expect(changed.progress.at(-1)).toBe('tokenized 1 file, 0 from the token cache');
    expectSame(changed, await load(await tok(model), { data }, false));
    expect(changed.set.source.chatTemplate?.source).toBe('model');
  });

  it('ignores a corrupted entry with one warning, re-tokenizes and rewrites it', async () => {
    const tokenizer = await tok();
    const data = ['fixtures/data/chat-sample.jsonl', 'fixtures/data/chat-sample.jsonl'];
    const plain = await load(tokenizer, { data }, false);
    await load(tokenizer, { data });
    const [entry] = await entries();
    const path = join(cacheRoot, 'tokens', entry!);
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, bytes.length - 7)); // truncated: the tensors overrun the file
    const bad = await load(tokenizer, { data });
    expect(bad.warnings.filter((w) => /token cache: ignoring/.test(w))).toHaveLength(1); // the file twice, one warning
    expect(bad.encodes).toBeGreaterThan(0);
    expect(bad.set).toEqual(plain.set);
    expect(sequenceSetDigest(bad.set)).toBe(sequenceSetDigest(plain.set));
    const again = await load(tokenizer, { data });
    expect(again.encodes).toBe(0);
    expectSame(again, plain);
    // An entry whose stored key differs (e.g. a file copied in by hand) is not used either.
    const stored = (await readFile(path)).toString('latin1');
    const edited = stored.replace('\\"format\\":\\"apex-token-cache/1\\"', '\\"format\\":\\"apex-token-cache/X\\"'); // the key as JSON inside the header's JSON
    expect(edited).not.toBe(stored);
    await writeFile(path, edited, 'latin1');
    const mismatched = await load(tokenizer, { data });
    expect(mismatched.warnings.some((w) => /key does not match/.test(w))).toBe(true);
    expectSame({ ...mismatched, warnings: plain.warnings }, plain);
    // Entries are written without fsync: bytes a crash damaged under an intact header fail their
    // checksum (a miss), they are never read as tokens. Here the last token id's top byte changes.
    await load(tokenizer, { data });
    const whole = await readFile(path);
    const header = Number(whole.readBigUInt64LE(0));
    const f = await SafetensorsFile.open(path);
    const ids = f.tensors.find((t) => t.name === 'ids')!;
    await f.close();
    const at = 8 + header + ids.end - 1;
    whole[at] = whole[at]! ^ 0x40;
    await writeFile(path, whole);
    const flipped = await load(tokenizer, { data });
    expect(flipped.warnings.some((w) => /do not match their checksum/.test(w))).toBe(true);
    expectSame({ ...flipped, warnings: plain.warnings }, plain);
  });

  it('an unusable cache folder gives a warning and the load still succeeds', async () => {
    const tokenizer = await tok();
    const blocker = join(cacheRoot, 'a-file');
    await writeFile(blocker, 'not a folder');
    process.env.APEX_CACHE_DIR = join(blocker, 'cache'); // ENOTDIR, even for root
    const data = ['fixtures/data/text-sample.jsonl'];
    const loaded = await load(tokenizer, { data, seqLen: 8 });
    expect(loaded.warnings).toHaveLength(1);
    expect(loaded.warnings[0]).toMatch(/^token cache: cannot create .* \(ENOTDIR\); tokenizing without it$/);
    expect(loaded.set).toEqual((await load(tokenizer, { data, seqLen: 8 }, false)).set);
    // Each load says it (the commands say a repeated warning once: base-command note(), run's onWarning).
    expect((await load(tokenizer, { data, seqLen: 8 })).warnings).toEqual(loaded.warnings);
  });

  it('a cache folder that cannot be written to gives a warning and the load still succeeds', async () => {
    const tokenizer = await tok();
    const data = ['fixtures/data/text-sample.jsonl'];
    await load(tokenizer, { data, seqLen: 8 });
    const [entry] = await entries();
    const path = join(cacheRoot, 'tokens', entry!);
      // A read-only folder does not stop root (the tests may run as root): a non-empty folder in
    // the entry's place makes the rename of the new entry fail, as a full disk or EACCES would.
    await rm(path);
    await mkdir(join(path, 'blocked'), { recursive: true });
    const loaded = await load(tokenizer, { data, seqLen: 8 });
    expect(loaded.warnings.filter((w) => /^token cache: cannot write to .*; tokenizing without it$/.test(w))).toHaveLength(1);
    expect(loaded.set).toEqual((await load(tokenizer, { data, seqLen: 8 }, false)).set);
  });

  it('APEX_TOKEN_CACHE=0 writes nothing', async () => {
    const tokenizer = await tok();
    for (const off of ['0', 'false', 'no', 'off']) {
      process.env.APEX_TOKEN_CACHE = off;
      const loaded = await load(tokenizer, { data: ['fixtures/data/chat-sample.jsonl'] });
      expect(loaded.progress.at(-1)).toBe('tokenized 1 file');
    }
    expect(await readdir(cacheRoot)).toEqual([]);
  });

  it('never caches data read from a FIFO', async () => {
    const tokenizer = await tok();
    const dir = await tempData();
    const fifo = join(dir, 'pipe.jsonl');
    execFileSync('mkfifo', [fifo]);
    const text = await readFile('fixtures/data/text-sample.jsonl', 'utf8');
    const writer = import('node:fs/promises').then((fs) => fs.writeFile(fifo, text));
    const loaded = await load(tokenizer, { data: [fifo], seqLen: 8 });
    await writer;
    expect(loaded.encodes).toBeGreaterThan(0);
    expect(await entries()).toEqual([]);
  });
});
