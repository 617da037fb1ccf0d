/**
 * Chat rendering and the assistant-token loss mask.
 *
 * A conversation is rendered with the model's Jinja chat template (@huggingface/jinja, given
 * the variables transformers' apply_chat_template passes), or, without one, with the Tulu format
 * of open-instruct: `<|system|>\n…\n`, `<|user|>\n…\n`, `<|assistant|>\n…</s>\n` (assistant content
 * stripped, followed by the EOS token and a newline).
 *
 * Which tokens are the assistant's is found by rendering incrementally: for the assistant message
 * i, the conversation up to message i with the generation prompt marks where its tokens start,
 * and the conversation up to and including message i marks where they end. Each segment between
 * boundaries is tokenized on its own, so the boundaries fall exactly between tokens; the
 * tokenizer's leading special tokens (BOS) are then added unless the template already wrote them.
 */
import { Template } from '@huggingface/jinja';
import { InputError } from '../errors.js';
import type { ApexTokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: string;
  content: string;
}

/** open-instruct's Tulu format, as a Jinja template. */
export const TULU_CHAT_TEMPLATE =
  "{% for message in messages %}" +
  "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + (message['content'] | trim) + eos_token + '\\n' }}" +
  "{% else %}{{ raise_exception('the Tulu chat format supports the roles system, user and assistant, not ' + message['role']) }}" +
  '{% endif %}{% endfor %}' +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export interface ChatRenderer {
  /** The template source in use (the model's, or TULU_CHAT_TEMPLATE). */
  readonly template: string;
  readonly isFallback: boolean;
  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string;
}

export function chatRenderer(options: { template?: string; bosToken?: string; eosToken?: string; specialTokens?: Readonly<Record<string, string | readonly string[]>>; file?: string }): ChatRenderer {
  const source = options.template ?? TULU_CHAT_TEMPLATE;
  let compiled: Template;
  try {
    compiled = new Template(source);
  } catch (e) {
    throw new InputError(`${options.template !== undefined && options.file !== undefined ? `${options.file}: ` : ''}chat template does not parse: ${(e as Error).message}`, 'BAD_CHAT_TEMPLATE', { cause: e });
  }
  return {
    template: source,
    isFallback: options.template === undefined,
    render(messages, addGenerationPrompt) {
      try {
        return compiled.render({
          // As transformers' apply_chat_template: the special tokens map, then these.
          ...options.specialTokens,
          messages,
          add_generation_prompt: addGenerationPrompt,
          bos_token: options.bosToken ?? '',
          eos_token: options.eosToken ?? '',
        });
      } catch (e) {
        throw new InputError(`chat template${options.template !== undefined && options.file !== undefined ? ` (${options.file})` : ''} failed: ${(e as Error).message}`, 'CHAT_TEMPLATE_FAILED', { cause: e });
      }
    },
  };
}

export function rendererFor(tokenizer: ApexTokenizer): ChatRenderer {
  if (tokenizer.chatTemplateError) throw tokenizer.chatTemplateError;
  return chatRenderer({ template: tokenizer.chatTemplate, bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken, specialTokens: tokenizer.specialTokens, ...(tokenizer.chatTemplateFile !== undefined ? { file: tokenizer.chatTemplateFile } : {}) });
}

/** Character ranges [start, end) of each assistant message inside the full rendering. */
export function assistantSpans(renderer: ChatRenderer, messages: readonly ChatMessage[]): { text: string; spans: Array<[number, number]> } {
  const text = renderer.render(messages, false);
  const spans: Array<[number, number]> = [];
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = renderer.render(messages.slice(0, i), true);
    const through = renderer.render(messages.slice(0, i + 1), false);
    if (!text.startsWith(before) || !text.startsWith(through) || through.length < before.length) {
      throw new InputError(
        `the chat template does not render conversations incrementally (the rendering up to assistant message ${i} is not a prefix of the whole conversation), so the assistant tokens cannot be located`,
        'CHAT_TEMPLATE_NOT_INCREMENTAL',
      );
    }
    const previousEnd = spans.length > 0 ? spans[spans.length - 1]![1] : 0;
    spans.push([Math.max(before.length, previousEnd), through.length]);
  });
  return { text, spans };
}

export interface ChatTokens {
  ids: number[];
  /** 1 for tokens of assistant messages (the loss targets), 0 elsewhere; same length as ids. */
  assistantMask: Uint8Array;
}

/**
 * Renders and tokenizes a conversation, marking the assistant's tokens. The whole rendering is
 * tokenized at once, as generation sees it (pieces tokenized apart differ from it where they
 * start: SentencePiece tokenizers prepend "▁" to every piece). An assistant span's tokens are
 * found by tokenizing the rendering up to the span's start and end (the conversation rendered
 * incrementally, as open-instruct does).
 */
/**
 * A conversation to be continued by the assistant: rendered with the generation prompt (the
 * template's opening of an assistant turn), tokenized whole, and given the tokenizer's leading
 * special tokens unless the template wrote them: the ids training saw before an assistant answer.
 */
export function chatPromptIds(tokenizer: ApexTokenizer, messages: readonly ChatMessage[], renderer = rendererFor(tokenizer)): number[] {
  const ids = tokenizer.encode(renderer.render(messages, true), { addSpecialTokens: false });
  return withPrefix(tokenizer.prefixIds, ids);
}

function withPrefix(prefix: readonly number[], ids: number[]): number[] {
  return prefix.every((id, i) => ids[i] === id) ? ids : [...prefix, ...ids];
}

export function tokenizeChat(tokenizer: ApexTokenizer, messages: readonly ChatMessage[], renderer = rendererFor(tokenizer)): ChatTokens {
  const { text, spans } = assistantSpans(renderer, messages);
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  const mask = new Array<number>(ids.length).fill(0);
  const tokensBefore = prefixTokenCounter(tokenizer, text, ids, spans.flat());
  for (const [start, end] of spans) {
    const from = tokensBefore(start);
    const to = Math.min(ids.length, tokensBefore(end));
    for (let i = from; i < to; i++) mask[i] = 1;
  }
  const prefix = tokenizer.prefixIds;
  const hasPrefix = prefix.every((id, i) => ids[i] === id);
  if (!hasPrefix) {
    ids.unshift(...prefix);
    mask.unshift(...prefix.map(() => 0));
  }
  return { ids, assistantMask: Uint8Array.from(mask) };
}

/**
 * `at => tokenizer.encode(text.slice(0, at)).length` (without special tokens) for a text whose
 * ids are `ids`, without tokenizing every prefix whole: that was quadratic in the conversation
 * (two prefixes per assistant turn; 2.0 s for a 100-turn, 15,000-token conversation against
 * 25 ms for the text once). The tokenizer tokenizes the pieces between its added tokens
 * independently (ApexTokenizer.addedTokenMatches), so a prefix's count is the count of the pieces
 * before the last added token that ends within it, plus the count of the rest from that token's
 * start. Checked once per text: the pieces' ids put together must be the text's ids, else (or
 * when the tokenizer does not cut independently) every prefix is tokenized whole, as before.
 * Counting the pieces costs one more pass over the text, so a text whose prefixes (`at`, the
 * positions that will be asked for) add up to less than that (one assistant turn) keeps the
 * whole prefixes.
 */
function prefixTokenCounter(tokenizer: ApexTokenizer, text: string, ids: readonly number[], at: readonly number[]): (at: number) => number {
  const encode = (from: number, to: number) => tokenizer.encode(text.slice(from, to), { addSpecialTokens: false });
  const whole = (at: number) => (at === 0 ? 0 : at === text.length ? ids.length : encode(0, at).length);
  if (at.reduce((sum, a) => sum + (a < text.length ? a : 0), 0) <= text.length) return whole;
  const matches = tokenizer.addedTokenMatches(text);
  if (matches === undefined || matches.length === 0) return whole;
  // Pieces start at 0 and at every match; tokensAt[i] = ids before piece i.
  const starts = [0, ...matches.map(([start]) => start).filter((start) => start > 0)];
  const tokensAt: number[] = [];
  let count = 0;
  for (let i = 0; i < starts.length; i++) {
    tokensAt.push(count);
    const piece = encode(starts[i]!, starts[i + 1] ?? text.length);
    for (let j = 0; j < piece.length; j++) {
      if (piece[j] !== ids[count + j]) return whole;
    }
    count += piece.length;
  }
  if (count !== ids.length) return whole;
  // Match i starts piece i + 1, or piece 0 when the text starts with it.
  const pieceOf = (i: number) => (matches[0]![0] === 0 ? i : i + 1);
  return (at) => {
    if (at === 0) return 0;
    if (at === text.length) return ids.length;
    // The last added token that ends within the prefix: up to its start both are cut the same way.
    let last = -1;
    while (last + 1 < matches.length && matches[last + 1]![1] <= at) last++;
    if (last < 0) return whole(at);
    const start = matches[last]![0];
    return tokensAt[pieceOf(last)]! + (at === start ? 0 : encode(start, at).length);
  };
}
