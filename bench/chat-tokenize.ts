/**
 * Chat tokenization benchmark (results go to docs/benchmarks.md, "Chat tokenization"):
 * `tokenizeChat` (render, tokenize, mask the assistant's tokens) on synthetic conversations of
 * 1 to 100 turns (user + assistant, 500 characters each) with the fixture's byte-level BPE
 * tokenizer and the Tulu fallback template, next to the way it counted prefix tokens before
 * (every prefix up to an assistant span's start and end tokenized whole, quadratic in the
 * conversation) and next to tokenizing the rendered text once. Checks that both give the same
 * mask. Median of 9 runs after 3 warm-up runs.
 *
 *   npx tsx bench/chat-tokenize.ts
 */
import { assistantSpans, rendererFor, tokenizeChat, type ChatMessage } from '../src/model/chat-template.js';
import { loadTokenizer, type ApexTokenizer } from '../src/model/tokenizer.js';

const tok = (await loadTokenizer('fixtures/llama-mha-f32'))!;
const renderer = rendererFor(tok);

function wholePrefixMask(t: ApexTokenizer, messages: ChatMessage[]): number[] {
  const { text, spans } = assistantSpans(renderer, messages);
  const ids = t.encode(text, { addSpecialTokens: false });
  const mask = new Array<number>(ids.length).fill(0);
  const before = (at: number) => (at === 0 ? 0 : at === text.length ? ids.length : t.encode(text.slice(0, at), { addSpecialTokens: false }).length);
  for (const [start, end] of spans) {
    const to = Math.min(ids.length, before(end));
    for (let i = before(start); i < to; i++) mask[i] = 1;
  }
  return mask;
}

function median(f: () => void): number {
  for (let i = 0; i < 3; i++) f();
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    f();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[4]!;
}

// One pass over every size first, unmeasured: the first row was otherwise measured with the
// tokenizer's and the template's code still cold (3.5 ms for one turn against 1.0 warm).
for (const turns of [1, 5, 10]) {
  const messages: ChatMessage[] = Array.from({ length: 2 * turns }, (_, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: 'warm up '.repeat(60) }));
  for (let i = 0; i < 20; i++) {
    tokenizeChat(tok, messages);
    wholePrefixMask(tok, messages);
  }
}

const content = 'The whale, the ship and the sea were all one to him, and he spoke of them at length. '.repeat(6).slice(0, 500);
console.log('| turns | tokens | tokenizeChat ms | whole prefixes (before) ms | text tokenized once ms |');
console.log('|---:|---:|---:|---:|---:|');
for (const turns of [1, 5, 10, 25, 50, 100]) {
  const messages: ChatMessage[] = Array.from({ length: 2 * turns }, (_, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content }));
  const got = tokenizeChat(tok, messages);
  const expected = wholePrefixMask(tok, messages);
  const offset = got.ids.length - expected.length; // the BOS tokenizeChat adds
  if (expected.some((m, i) => m !== got.assistantMask[i + offset])) throw new Error(`${turns} turns: the masks differ`);
  const text = renderer.render(messages, false);
  const fast = median(() => tokenizeChat(tok, messages));
  const slow = median(() => wholePrefixMask(tok, messages));
  const once = median(() => tok.encode(text, { addSpecialTokens: false }));
  console.log(`| ${turns} | ${got.ids.length} | ${fast.toFixed(1)} | ${slow.toFixed(1)} | ${once.toFixed(1)} |`);
}
