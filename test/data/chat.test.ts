import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chatRenderer, rendererFor, tokenizeChat, TULU_CHAT_TEMPLATE, type ChatMessage } from '../../src/model/chat-template.js';
import { loadTokenizer, type ApexTokenizer } from '../../src/model/tokenizer.js';

const tokenizer = async (): Promise<ApexTokenizer> => (await loadTokenizer('fixtures/llama-mha-f32'))!;
const withTemplate = (tok: ApexTokenizer, template: string): ApexTokenizer => ({ ...tok, chatTemplate: template });

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: ' Hello! ' },
  { role: 'user', content: 'Bye' },
  { role: 'assistant', content: 'Farewell.' },
];

describe('Tulu fallback', () => {
  it('renders the open-instruct Tulu format', () => {
    const r = chatRenderer({ bosToken: '<s>', eosToken: '</s>' });
    expect(r.isFallback).toBe(true);
    expect(r.template).toBe(TULU_CHAT_TEMPLATE);
    expect(r.render(CONVERSATION, false)).toBe(
      '<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\nHello!</s>\n<|user|>\nBye\n<|assistant|>\nFarewell.</s>\n',
    );
    expect(r.render(CONVERSATION.slice(0, 2), true)).toBe('<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\n');
  });

  it('refuses roles the format does not have', () => {
    const r = chatRenderer({ eosToken: '</s>' });
    expect(() => r.render([{ role: 'tool', content: 'x' }], false)).toThrow(/system, user and assistant/);
  });

  it('masks exactly the assistant tokens (content, EOS, newline), with BOS first', async () => {
    const tok = await tokenizer();
    const { ids, assistantMask } = tokenizeChat(tok, CONVERSATION);
    // Built by hand from the literal segments of the rendering.
    const seg = (s: string) => tok.encode(s, { addSpecialTokens: false });
    const parts: Array<[string, number]> = [
      ['<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\n', 0],
      ['Hello!</s>\n', 1],
      ['<|user|>\nBye\n<|assistant|>\n', 0],
      ['Farewell.</s>\n', 1],
    ];
    const expectedIds = [1, ...parts.flatMap(([s]) => seg(s))];
    const expectedMask = [0, ...parts.flatMap(([s, m]) => seg(s).map(() => m))];
    expect(ids).toEqual(expectedIds);
    expect(Array.from(assistantMask)).toEqual(expectedMask);
    expect(ids.filter((id) => id === 2)).toHaveLength(2);
    expect(tok.decode(ids.filter((_, i) => assistantMask[i] === 1))).toBe('Hello!</s>\nFarewell.</s>\n');
  });
});

describe('model chat template', () => {
  const CHATML =
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

  it('masks the assistant turns of a custom Jinja template', async () => {
    const tok = withTemplate(await tokenizer(), CHATML);
    const messages = CONVERSATION.slice(1);
    const { ids, assistantMask } = tokenizeChat(tok, messages);
    const masked = tok.decode(ids.filter((_, i) => assistantMask[i] === 1));
    expect(masked).toBe(' Hello! <|im_end|>\nFarewell.<|im_end|>\n');
    const unmasked = tok.decode(ids.filter((_, i) => assistantMask[i] === 0));
    expect(unmasked).toBe('<s><|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n');
  });

  it('does not double BOS when the template writes bos_token', async () => {
    const tok = withTemplate(await tokenizer(), `{{ bos_token }}${CHATML}`);
    const { ids, assistantMask } = tokenizeChat(tok, CONVERSATION.slice(1, 3));
    expect(ids[0]).toBe(1);
    expect(ids.filter((id) => id === 1)).toHaveLength(1);
    expect(assistantMask[0]).toBe(0);
  });

  it('refuses a template that does not render incrementally', async () => {
    const tok = withTemplate(await tokenizer(), '{% for m in messages %}{{ m.content }}{% endfor %}{{ messages | length }}');
    expect(() => tokenizeChat(tok, CONVERSATION)).toThrow(/incrementally/);
  });
});

/**
 * A SentencePiece-style tokenizer.json (Llama-2 / TinyLlama layout: Prepend "▁" normalizer,
 * byte-fallback BPE): tokenizing a text in pieces puts a "▁" at the start of every piece.
 */
async function sentencePieceTokenizer(): Promise<ApexTokenizer> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = Object.keys(vocab).length;
  for (const c of '▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<|>.,!?\'') vocab[c] = Object.keys(vocab).length;
  const merges: string[] = [];
  for (const w of ['▁T', '▁Th', '▁The', '▁c', '▁ca', '▁cap', 'He', 'Hel', 'Hell', 'Hello', '▁He', '▁Hel', '▁Hell', '▁Hello']) {
    merges.push(`${w.slice(0, -1)} ${w.slice(-1)}`);
    vocab[w] = Object.keys(vocab).length;
  }
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const json = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special('<unk>', 0), special('<s>', 1), special('</s>', 2)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges },
  };
  const dir = await mkdtemp(join(tmpdir(), 'apex-sp-'));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(json));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'LlamaTokenizerFast', bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, legacy: true }));
  return (await loadTokenizer(dir))!;
}

describe('SentencePiece-style tokenizers', () => {
  it('token ids are those of the whole rendering (no "▁" where a piece starts), the answer still masked', async () => {
    const tok = await sentencePieceTokenizer();
    const messages: ChatMessage[] = [{ role: 'user', content: 'The cap?' }, { role: 'assistant', content: 'Hello there.' }];
    const { ids, assistantMask } = tokenizeChat(tok, messages);
    const whole = tok.encode(rendererFor(tok).render(messages, false));
    expect(ids).toEqual(whole);
    // The masked tokens are one run: the answer and what closes it (EOS, newline), nothing of the prompt.
    const first = assistantMask.indexOf(1);
    const last = assistantMask.lastIndexOf(1);
    expect(assistantMask.slice(first, last + 1).every((m) => m === 1)).toBe(true);
    expect(tok.decode(ids.slice(first, last + 1))).toMatch(/^Hello there\.<\/s>\s*$/);
    expect(tok.decode(ids.slice(0, first))).toMatch(/The cap\?\s*<\|assistant\|>\s*$/);
  });
});

describe('template variables', () => {
  it('a template gets the special tokens transformers passes it (unk_token, pad_token, additional ones), not only bos/eos', async () => {
    const tok = await tokenizer();
    expect(tok.specialTokens).toEqual({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' });
    const r = rendererFor(withTemplate({ ...tok, specialTokens: { ...tok.specialTokens, pad_token: '<pad>', additional_special_tokens: ['<a>', '<b>'] } },
      "{{ unk_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{{ pad_token }}{{ additional_special_tokens[1] }}{{ eos_token }}"));
    expect(r.render([{ role: 'user', content: 'hi' }], false)).toBe('<unk>hi<pad><b></s>');
  });
});

describe('chat_template in tokenizer_config.json', () => {
  async function modelWith(files: Record<string, string>): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'apex-chat-template-'));
    await writeFile(join(dir, 'tokenizer.json'), await readFile('fixtures/llama-mha-f32/tokenizer.json'));
    const config = JSON.parse(await readFile('fixtures/llama-mha-f32/tokenizer_config.json', 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
    return dir;
  }
  const config = async (chatTemplate: unknown) => JSON.stringify({ ...(JSON.parse(await readFile('fixtures/llama-mha-f32/tokenizer_config.json', 'utf8')) as object), chat_template: chatTemplate });

  it('one it cannot use is refused, naming the file, not taken for none (which rendered conversations in the Tulu format instead)', async () => {
    for (const [value, rule] of [
      [5, /tokenizer_config\.json: chat_template must be a string, or a list of \{name, template\} with a "default" one; got a number/],
      [[{ name: 'tool_use', template: '{{ messages }}' }], /tokenizer_config\.json: chat_template lists templates tool_use but none named "default" \(transformers refuses it too\)/],
      [{ default: '{{ messages }}' }, /chat_template must be a string, or a list .*; got an object/],
    ] as const) {
      const tok = (await loadTokenizer(await modelWith({ 'tokenizer_config.json': await config(value) })))!;
      expect(() => rendererFor(tok), JSON.stringify(value)).toThrow(expect.objectContaining({ code: 'BAD_CHAT_TEMPLATE', exit: 3, message: expect.stringMatching(rule) }));
      // Text needs no chat template: it still tokenizes.
      expect(tok.encode('Hello', { addSpecialTokens: false }).length).toBeGreaterThan(0);
    }
    const listed = await loadTokenizer(await modelWith({ 'tokenizer_config.json': await config([{ name: 'tool_use', template: 'x' }, { name: 'default', template: 'y' }]) }));
    expect(listed!.chatTemplate).toBe('y');
    expect((await loadTokenizer(await modelWith({ 'tokenizer_config.json': await config(null) })))!.chatTemplate).toBeUndefined();
  });

  it('a template that does not parse is refused naming the file it came from', async () => {
    const fromConfig = await loadTokenizer(await modelWith({ 'tokenizer_config.json': await config('{% for m in messages %}{{ m.content ') }));
    expect(() => rendererFor(fromConfig!)).toThrow(/tokenizer_config\.json: chat template does not parse: /);
    const fromJinja = await loadTokenizer(await modelWith({ 'chat_template.jinja': '{% if %}' }));
    expect(() => rendererFor(fromJinja!)).toThrow(/chat_template\.jinja: chat template does not parse: /);
    // One that parses but raises says which file too (apex generate --chat has no data line to name).
    const raising = await loadTokenizer(await modelWith({ 'tokenizer_config.json': await config("{{ raise_exception('no system role') }}") }));
    expect(() => rendererFor(raising!).render([{ role: 'user', content: 'hi' }], true)).toThrow(/^chat template \(.*tokenizer_config\.json\) failed: no system role$/);
  });
});
