/**
 * Tokenizing in worker threads (src/train/tokenize-parallel.ts, tokenize-worker.ts): with
 * APEX_TOKENIZE_THREADS=2 a load gives exactly the set APEX_TOKENIZE_THREADS=1 (in process)
 * gives, for text and chat, with and without the token cache; a chat template error inside a
 * worker fails the load with the in-process error; Ctrl-C stops it. Each test checks that the
 * workers really ran (workerStats, and the progress message naming the threads).
 */
import { availableParallelism } from 'node:os';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apex, ensureBuilt, workspace } from '../reliability/cli.js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InputError, InterruptedError, UsageError } from '../../src/errors.js';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { loadSequences, type LoadSequencesOptions, type SequenceSet } from '../../src/train/data.js';
import { tokenizeThreadCap, workerStats } from '../../src/train/tokenize-parallel.js';
import { sequenceSetDigest } from '../../src/train/trainer.js';

const FIXTURE = 'fixtures/llama-mha-f32';
const ENV = ['APEX_TOKENIZE_THREADS', 'APEX_TOKEN_CACHE', 'APEX_CACHE_DIR'] as const;
let tokenizer: ApexTokenizer;
let dir: string;
let saved: Record<string, string | undefined>;

beforeAll(async () => {
  tokenizer = (await loadTokenizer(FIXTURE))!;
  dir = await mkdtemp(join(tmpdir(), 'apex-tokenize-parallel-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));
  process.env.APEX_TOKEN_CACHE = '0';
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
  /** Pieces the workers tokenized in this load. */
  pieces: number;
}

async function load(threads: number, options: Partial<LoadSequencesOptions>, tok = tokenizer): Promise<Loaded> {
  process.env.APEX_TOKENIZE_THREADS = String(threads);
  const warnings: string[] = [];
  const progress: string[] = [];
  const before = workerStats.pieces;
  const set = await loadSequences({ tokenizer: tok, seqLen: 48, seed: 0, onWarning: (m) => warnings.push(m), onProgress: (m) => progress.push(m), ...options });
  return { set, warnings, progress, pieces: workerStats.pieces - before };
}

/** Same sequences, masks, lengths, record, warnings and digest (toEqual compares typed arrays element by element, and their types). */
function expectSame(a: Loaded, b: Loaded): void {
  expect(a.set).toEqual(b.set);
  expect(a.set.sequences.every((s) => s instanceof Int32Array)).toBe(true);
  expect(sequenceSetDigest(a.set)).toBe(sequenceSetDigest(b.set));
  expect(a.warnings).toEqual(b.warnings);
}

function expectThreads(parallel: Loaded, serial: Loaded): void {
  expect(serial.pieces).toBe(0);
  expect(serial.progress.join('\n')).not.toMatch(/threads/);
  expect(parallel.pieces).toBeGreaterThanOrEqual(2);
  expect(parallel.progress.at(-1)).toMatch(/\(2 threads\)$/);
}

/** `n` conversations (about 200 characters each), some long enough to be truncated at 48 tokens; `bad` gets a role the Tulu template refuses. */
function chatLines(n: number, bad?: number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const messages = [
      ...(i % 3 === 0 ? [{ role: 'system', content: `Answer briefly, conversation ${i}.` }] : []),
      { role: i === bad ? 'tool' : 'user', content: `Question ${i}: what is ${i} plus ${i * 7}? Explain the steps.` },
      { role: 'assistant', content: `${i} plus ${i * 7} is ${i * 8}. ${'Adding the ones, then the tens. '.repeat(1 + (i % 4))}` },
    ];
    lines.push(JSON.stringify({ messages }));
  }
  return lines.join('\n') + '\n';
}

describe('parallel tokenization', () => {
  it('text: the bundled corpora load the same with 2 worker threads as in process', async () => {
    for (const options of [{ builtin: 'out-of-domain' }, { builtin: 'in-domain', split: 'heldout' as const, heldoutFraction: 0.3 }]) {
      const serial = await load(1, options);
      const parallel = await load(2, options);
      expectThreads(parallel, serial);
      expectSame(parallel, serial);
    }
  });

  it('chat: a JSONL file loads the same with 2 worker threads as in process (masks, lengths, warnings)', async () => {
    const file = join(dir, 'chat.jsonl');
    await writeFile(file, chatLines(900));
    for (const split of ['all', 'train'] as const) {
      const serial = await load(1, { data: [file], split });
      const parallel = await load(2, { data: [file], split });
      expectThreads(parallel, serial);
      expect(serial.warnings.join('\n')).toMatch(/lost assistant tokens to truncation/);
      expectSame(parallel, serial);
      expect(parallel.set.lossMasks!.every((m) => m instanceof Uint8Array)).toBe(true);
    }
  });

  it("chat with the model's own template: the workers render with the main thread's template", async () => {
    const model = join(dir, 'model-with-template');
    await cp(FIXTURE, model, { recursive: true });
    const configPath = join(model, 'tokenizer_config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    config.chat_template = "{{ bos_token }}{% for m in messages %}{{ '### ' + m['role'] + ':\\n' + m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}";
    await writeFile(configPath, JSON.stringify(config));
    const own = (await loadTokenizer(model))!;
    const file = join(dir, 'chat-own.jsonl');
    await writeFile(file, chatLines(900));
    const serial = await load(1, { data: [file] }, own);
    const parallel = await load(2, { data: [file] }, own);
    expectThreads(parallel, serial);
    expect(parallel.set.source.chatTemplate?.source).toBe('model');
    expectSame(parallel, serial);
    // Not the Tulu rendering: the template in use decides the tokens.
    expect(serial.set).not.toEqual((await load(1, { data: [file] })).set);
  });

  it('with the token cache: files tokenized by workers are stored, and read back the same', async () => {
    process.env.APEX_CACHE_DIR = join(dir, 'cache');
    delete process.env.APEX_TOKEN_CACHE;
    const file = join(dir, 'chat-cached.jsonl');
    await writeFile(file, chatLines(700));
    const cold = await load(2, { data: [file, join('fixtures/data/chat-sample.jsonl')], split: 'heldout' });
    expect(cold.pieces).toBeGreaterThanOrEqual(2);
    expect(cold.progress.at(-1)).toMatch(/^tokenized 2 files, 0 from the token cache \(2 threads\)$/);
    expect((await readdir(join(dir, 'cache', 'tokens'))).filter((n) => n.endsWith('.safetensors'))).toHaveLength(2);
    const warm = await load(1, { data: [file, join('fixtures/data/chat-sample.jsonl')], split: 'heldout' });
    expect(warm.progress.at(-1)).toBe('tokenized 2 files, 2 from the token cache');
    process.env.APEX_TOKEN_CACHE = '0';
    const fresh = await load(1, { data: [file, join('fixtures/data/chat-sample.jsonl')], split: 'heldout' });
    expectSame(cold, fresh);
    expectSame(warm, fresh);
  });

  it('with the token cache: a file given twice is tokenized once and read back for its second time, as in process', async () => {
    delete process.env.APEX_TOKEN_CACHE;
    const file = join(dir, 'chat-twice.jsonl');
    await writeFile(file, chatLines(600));
    const run = async (threads: number) => {
      process.env.APEX_CACHE_DIR = join(dir, `cache-twice-${threads}`);
      return await load(threads, { data: [file, file] });
    };
    const serial = await run(1);
    const parallel = await run(2);
    expect(serial.progress.at(-1)).toBe('tokenized 2 files, 1 from the token cache');
    expect(parallel.progress.at(-1)).toBe('tokenized 2 files, 1 from the token cache (2 threads)');
    expect(parallel.pieces).toBeGreaterThanOrEqual(2);
    expectSame(parallel, serial);
  });

  it('a chat template error inside a worker fails the load with the in-process error', async () => {
    const file = join(dir, 'chat-bad.jsonl');
    await writeFile(file, chatLines(900, 700));
    const failure = async (threads: number) => {
      const before = workerStats.pieces;
      const e = await load(threads, { data: [file] }).then(
        () => undefined,
        (err: unknown) => err,
      );
      return { e, pieces: workerStats.pieces - before };
    };
    const serial = await failure(1);
    const parallel = await failure(2);
    expect(serial.e).toBeInstanceOf(InputError);
    expect(parallel.e).toBeInstanceOf(InputError);
    expect(parallel.pieces).toBeGreaterThanOrEqual(1); // the workers ran, up to the failing piece at least
    const e = parallel.e as InputError;
    expect(e.code).toBe('CHAT_TEMPLATE_FAILED');
    expect(e.message).toBe(`${file}:701: chat template failed: the Tulu chat format supports the roles system, user and assistant, not tool`);
    expect({ name: e.constructor.name, code: e.code, message: e.message, exit: e.exit }).toEqual({
      name: (serial.e as InputError).constructor.name,
      code: (serial.e as InputError).code,
      message: (serial.e as InputError).message,
      exit: (serial.e as InputError).exit,
    });
  });

  it('Ctrl-C stops the workers promptly and throws the signal reason', async () => {
    const controller = new AbortController();
    process.env.APEX_TOKENIZE_THREADS = '2';
    const threadsBefore = workerStats.threads;
    const piecesBefore = workerStats.pieces;
    // Stopped once the first piece has come back (not after a time, which a loaded machine stretches):
    // the corpus is many pieces, so the load is still running and must reject, not resolve.
    const poll = setInterval(() => {
      if (workerStats.pieces > piecesBefore) controller.abort(new InterruptedError());
    }, 5);
    try {
      await expect(loadSequences({ tokenizer, seqLen: 48, seed: 0, builtin: 'out-of-domain', signal: controller.signal })).rejects.toBeInstanceOf(InterruptedError);
    } finally {
      clearInterval(poll);
    }
    expect(workerStats.threads - threadsBefore).toBe(2);
  });

  it('workers only when the data is large enough, unless APEX_TOKENIZE_THREADS says', () => {
    const auto = Math.max(1, Math.min(availableParallelism() - 1, 16));
    expect(tokenizeThreadCap(3_999_999, 'text', {})).toBe(1);
    expect(tokenizeThreadCap(4_000_000, 'text', {})).toBe(auto);
    expect(tokenizeThreadCap(999_999, 'chat', {})).toBe(1);
    expect(tokenizeThreadCap(1_000_000, 'chat', {})).toBe(auto);
    expect(tokenizeThreadCap(10, 'text', { APEX_TOKENIZE_THREADS: '3' })).toBe(3);
    expect(tokenizeThreadCap(1e9, 'chat', { APEX_TOKENIZE_THREADS: '1' })).toBe(1);
  });

  it('APEX_TOKENIZE_THREADS must be a whole number ≥ 1', async () => {
    process.env.APEX_TOKENIZE_THREADS = '0';
    await expect(loadSequences({ tokenizer, seqLen: 48, seed: 0, builtin: 'in-domain' })).rejects.toBeInstanceOf(UsageError);
  });
});

describe('the built CLI', () => {
  it('apex eval tokenizes in worker threads from dist/ (APEX_TOKENIZE_THREADS=2) and measures what it measures in process', async () => {
    await ensureBuilt(['eval']);
    const home = workspace('tokenize-parallel-cli');
    const args = ['eval', 'fixtures/llama-mha-f32', '--corpus', 'out-of-domain', '--seq-len', '64', '--samples', '8', '--backend', 'wasm', '--json'];
    const serial = await apex(args, { home, env: { APEX_TOKENIZE_THREADS: '1' } });
    const parallel = await apex(args, { home, env: { APEX_TOKENIZE_THREADS: '2' } });
    expect([serial.status, parallel.status], parallel.stderr).toEqual([0, 0]);
    expect(parallel.stderr).toContain('(2 threads)');
    expect(parallel.json!.data).toMatchObject({ perplexity: serial.json!.data.perplexity, data: serial.json!.data.data });
  });

  it('apex eval with the token cache on (the default outside tests): the second run reads every file from the cache and measures the same', async () => {
    await ensureBuilt(['eval']);
    const home = workspace('token-cache-cli');
    const env = { APEX_TOKEN_CACHE: '1', APEX_CACHE_DIR: join(home, 'apex-cache'), APEX_TOKENIZE_THREADS: '1' };
    const args = ['eval', 'fixtures/llama-mha-f32', '--corpus', 'in-domain', '--seq-len', '64', '--samples', '8', '--backend', 'wasm', '--json'];
    const cold = await apex(args, { home, env });
    const warm = await apex(args, { home, env });
    expect([cold.status, warm.status], warm.stderr).toEqual([0, 0]);
    const files = /tokenized (\d+) files, (\d+) from the token cache/;
    const [, coldFiles, coldHits] = files.exec(cold.stderr) ?? [];
    const [, warmFiles, warmHits] = files.exec(warm.stderr) ?? [];
    expect([Number(coldHits), Number(warmHits)]).toEqual([0, Number(coldFiles)]);
    expect(Number(warmFiles)).toBeGreaterThan(0);
    expect(warm.json!.data).toMatchObject({ perplexity: cold.json!.data.perplexity, data: cold.json!.data.data });
    expect((await readdir(join(home, 'apex-cache', 'tokens'))).filter((f) => f.endsWith('.safetensors'))).toHaveLength(Number(coldFiles));
  });
});
