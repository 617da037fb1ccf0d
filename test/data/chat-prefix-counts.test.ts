// tokenizeChat finds an assistant span's tokens by the token count of the rendering up to the
// span's start and end. It used to tokenize each such prefix whole (quadratic in the
// conversation); it now counts the pieces between the tokenizer's added tokens once and tokenizes
// only the rest of each prefix. The masks must be the ones tokenizing every prefix whole gives,
// on every kind of tokenizer: byte-level BPE, SentencePiece-style (Prepend normalizer),
// Metaspace with prepend_scheme "first", added tokens that strip whitespace on their right or
// left, normalized added tokens; with templates whose markers are added tokens (ChatML) or plain
// text (Tulu), and contents that contain the added tokens' text.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { assistantSpans, rendererFor, tokenizeChat, type ChatMessage } from '../../src/model/chat-template.js';
import { addedTokenMatcher, loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';
import { Rng } from '../../src/util/rng.js';

const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

type Added = { content: string; special?: boolean; lstrip?: boolean; rstrip?: boolean; normalized?: boolean; single_word?: boolean };

/** The fixture's byte-level BPE tokenizer.json with extra added tokens and an optional chat template. */
async function byteLevel(extra: Added[], template?: string, normalizer: unknown = null): Promise<ApexTokenizer> {
  const dir = await mkdtemp(join(tmpdir(), 'apex-chat-prefix-'));
  const json = JSON.parse(await readFile('fixtures/llama-mha-f32/tokenizer.json', 'utf8'));
  let id = Math.max(...Object.values(json.model.vocab as Record<string, number>), ...json.added_tokens.map((t: { id: number }) => t.id)) + 1;
  json.normalizer = normalizer;
  for (const t of extra) json.added_tokens.push({ id: id++, content: t.content, single_word: t.single_word ?? false, lstrip: t.lstrip ?? false, rstrip: t.rstrip ?? false, normalized: t.normalized ?? false, special: t.special ?? true });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(json));
  const config = JSON.parse(await readFile('fixtures/llama-mha-f32/tokenizer_config.json', 'utf8'));
  if (template !== undefined) config.chat_template = template;
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return (await loadTokenizer(dir))!;
}

/** A SentencePiece-style tokenizer (byte-fallback BPE over characters), Llama-2 layout or Metaspace "first". */
async function sentencePiece(kind: 'prepend' | 'metaspace-first', extra: Added[] = [], template?: string): Promise<ApexTokenizer> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = Object.keys(vocab).length;
  for (const c of '▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<|>.,!?\'_') vocab[c] = Object.keys(vocab).length;
  const merges: string[] = [];
  for (const w of ['▁t', '▁th', '▁the', '▁a', '▁an', '▁and', 'er', 'he', 'her', '▁w', '▁wh', '▁wha', '▁whal', '▁whale', '<|', '|>']) {
    merges.push(`${w.slice(0, -1)} ${w.slice(-1)}`);
    vocab[w] = Object.keys(vocab).length;
  }
  const added = (content: string, id: number, o: Partial<Added> = {}) => ({ id, content, single_word: false, lstrip: o.lstrip ?? false, rstrip: o.rstrip ?? false, normalized: o.normalized ?? false, special: o.special ?? true });
  const addedTokens = [added('<unk>', 0), added('<s>', 1), added('</s>', 2)];
  let id = Object.keys(vocab).length;
  for (const t of extra) addedTokens.push(added(t.content, id++, t));
  const json = {
    version: '1.0', truncation: null, padding: null, added_tokens: addedTokens,
    normalizer: kind === 'prepend' ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] } : null,
    pre_tokenizer: kind === 'metaspace-first' ? { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false } : null,
    post_processor: null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
  const dir = await mkdtemp(join(tmpdir(), 'apex-chat-prefix-sp-'));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(json));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, ...(template !== undefined ? { chat_template: template } : {}) }));
  return (await loadTokenizer(dir))!;
}

const WORDS = ['the', 'whale', 'and', 'her', ' ', '  ', '\n', '\n\n', '\t', 'What?', 'é', '日本', '🐋', '<|im_start|>', '<|im_end|>', '</s>', '<s>', '<|user|>', '<|assistant|>', '<|', '|>', '_x_', '.', '', '<|USER|>', 'ﬁ', 'İ', '<|im', 'im_end|>'];

function conversation(rng: Rng, turns: number): ChatMessage[] {
  const text = () => Array.from({ length: Math.floor(rng.next() * 12) }, () => WORDS[Math.floor(rng.next() * WORDS.length)]!).join(rng.next() < 0.5 ? ' ' : '');
  const messages: ChatMessage[] = rng.next() < 0.3 ? [{ role: 'system', content: text() }] : [];
  for (let t = 0; t < turns; t++) messages.push({ role: 'user', content: text() }, { role: 'assistant', content: text() });
  return messages;
}

/** The mask as tokenizeChat made it before: every prefix tokenized whole. */
function maskByWholePrefixes(tok: ApexTokenizer, messages: ChatMessage[]): { ids: number[]; mask: number[] } {
  const { text, spans } = assistantSpans(rendererFor(tok), messages);
  const ids = tok.encode(text, { addSpecialTokens: false });
  const mask = new Array<number>(ids.length).fill(0);
  const before = (at: number) => (at === 0 ? 0 : at === text.length ? ids.length : tok.encode(text.slice(0, at), { addSpecialTokens: false }).length);
  for (const [start, end] of spans) {
    const to = Math.min(ids.length, before(end));
    for (let i = before(start); i < to; i++) mask[i] = 1;
  }
  const prefix = tok.prefixIds;
  if (!prefix.every((p, i) => ids[i] === p)) {
    ids.unshift(...prefix);
    mask.unshift(...prefix.map(() => 0));
  }
  return { ids, mask };
}

/** The tokenizer with its encode counting the characters it is given. */
function counting(tok: ApexTokenizer): { tok: ApexTokenizer; chars: () => number } {
  let chars = 0;
  return { tok: { ...tok, encode: (text, o) => ((chars += text.length), tok.encode(text, o)) }, chars: () => chars };
}

const CASES: Array<{ name: string; make: () => Promise<ApexTokenizer>; fast: boolean }> = [
  { name: 'byte-level BPE, Tulu fallback (only </s> is an added token in the rendering)', make: () => byteLevel([]), fast: true },
  { name: 'byte-level BPE, ChatML markers as added tokens', make: () => byteLevel([{ content: '<|im_start|>' }, { content: '<|im_end|>' }], CHATML), fast: true },
  { name: 'byte-level BPE, ChatML, <|im_end|> strips whitespace on its right', make: () => byteLevel([{ content: '<|im_start|>' }, { content: '<|im_end|>', rstrip: true }], CHATML), fast: true },
  { name: 'byte-level BPE, ChatML, <|im_start|> strips whitespace on its left (prefixes tokenized whole)', make: () => byteLevel([{ content: '<|im_start|>', lstrip: true }, { content: '<|im_end|>' }], CHATML), fast: false },
  { name: 'SentencePiece-style (Prepend "▁"), Tulu fallback', make: () => sentencePiece('prepend'), fast: true },
  { name: 'SentencePiece-style, ChatML markers as added tokens, one of them normalized', make: () => sentencePiece('prepend', [{ content: '<|im_start|>' }, { content: '<|im_end|>', normalized: true, special: false }], CHATML), fast: true },
  { name: 'Metaspace prepend_scheme "first", ChatML markers as added tokens', make: () => sentencePiece('metaspace-first', [{ content: '<|im_start|>' }, { content: '<|im_end|>' }], CHATML), fast: true },
  { name: 'Metaspace prepend_scheme "first", Tulu fallback', make: () => sentencePiece('metaspace-first'), fast: true },
  // Found no difference either (a random search over these and other settings, 2026-11-28):
  { name: 'byte-level BPE, ChatML, added tokens that are prefixes and suffixes of each other, one single_word', make: () => byteLevel([{ content: '<|im_start|>' }, { content: '<|im_end|>' }, { content: '<|im', single_word: true }, { content: 'im_end|>' }, { content: '<|' }], CHATML), fast: true },
  { name: 'byte-level BPE under NFKC and Lowercase (lengths change), ChatML, normalized added tokens with upper-case and ligature text', make: () => byteLevel([{ content: '<|im_start|>' }, { content: '<|im_end|>', rstrip: true }, { content: '<|USER|>', normalized: true, special: false }, { content: 'ﬁ', normalized: true, special: false }], CHATML, { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' }] }), fast: true },
];

describe('assistant masks from prefix counts', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const tok = await c.make();
      const rng = new Rng(7);
      let fastChars = 0;
      let textChars = 0;
      for (let n = 0; n < 60; n++) {
        const messages = conversation(rng, 1 + Math.floor(rng.next() * 8));
        const expected = maskByWholePrefixes(tok, messages);
        const { tok: counted, chars } = counting(tok);
        const got = tokenizeChat(counted, messages);
        expect(got.ids).toEqual(expected.ids);
        expect(Array.from(got.assistantMask), JSON.stringify(messages)).toEqual(expected.mask);
        fastChars += chars();
        textChars += rendererFor(tok).render(messages, false).length;
      }
      // Tokenized: the text, its pieces (the text again) and a short rest per boundary; whole
      // prefixes cost about as many characters as turns times the text.
      if (c.fast) expect(fastChars).toBeLessThan(3 * textChars);
      else expect(fastChars).toBeGreaterThan(3 * textChars);
    });
  }

  it('a 100-turn conversation tokenizes about 3 times its text, not once per turn', async () => {
    const { tok, chars } = counting(await byteLevel([]));
    const messages = Array.from({ length: 200 }, (_, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: 'The whale and the sea. '.repeat(20) }));
    tokenizeChat(tok, messages);
    const text = rendererFor(tok).render(messages, false).length;
    expect(chars()).toBeLessThan(3 * text);
  });

  it('one assistant turn is not counted in pieces: its one prefix costs less than a second pass', async () => {
    const { tok, chars } = counting(await byteLevel([]));
    const messages = [{ role: 'user', content: 'The whale and the sea. '.repeat(20) }, { role: 'assistant', content: 'The whale. '.repeat(20) }];
    tokenizeChat(tok, messages);
    const text = rendererFor(tok).render(messages, false).length;
    expect(chars()).toBeLessThan(2 * text);
  });
});

describe('addedTokenMatcher', () => {
  it('matches the longest added token at each position, left to right, skipping normalized ones where a normalizer runs', () => {
    const match = addedTokenMatcher({
      normalizer: { type: 'Lowercase' },
      added_tokens: [{ content: '<a>', special: true }, { content: '<a><b>', special: true, normalized: false }, { content: 'x', special: false }, { content: '<b>', special: true, normalized: true }],
    });
    // 'x' (not special: normalized by default) and '<b>' (normalized) are matched after normalization, not here.
    expect(match('x<a><b><a>x<b><a')).toEqual([[1, 7], [7, 10]]);
    expect(addedTokenMatcher({ normalizer: null, added_tokens: [{ content: 'x', special: false }] })('axbx')).toEqual([[1, 2], [3, 4]]);
    expect(addedTokenMatcher({ added_tokens: [{ content: '<a>', special: true, lstrip: true }] })('<a>')).toBeUndefined();
  });
});
