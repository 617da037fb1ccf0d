import { describe, expect, it } from 'vitest';
import { chatRenderer, tokenizeChat, TULU_CHAT_TEMPLATE, type ChatMessage } from '../../src/model/chat-template.js';
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
