/**
 * Prompts for generation, from texts (through the model's tokenizer, BOS as its post-processor
 * says; with `chat`, each text as a user turn rendered by the chat template), from an
 * `--input-ids` file (one prompt per row), or, with neither, the BOS token alone.
 */
import { UsageError } from '../errors.js';
import { chatPromptIds, type ChatMessage, type ChatRenderer } from './chat-template.js';
import { readInputIds } from '../train/data-input-ids.js';
import type { ModelSpec } from './model-spec.js';
import type { ApexTokenizer } from './tokenizer.js';

/** Texts given as user turns of a conversation (apex generate --chat), after an optional system message. */
export interface ChatPromptOptions {
  readonly renderer: ChatRenderer;
  readonly system?: string;
}

export async function buildPrompts(options: { prompts?: readonly string[]; inputIds?: string; tokenizer?: ApexTokenizer; chat?: ChatPromptOptions; spec: ModelSpec }): Promise<Int32Array[]> {
  if (options.inputIds !== undefined) {
    const { rows, lengths } = await readInputIds(options.inputIds);
    // Rows padded on the right (an attention_mask) are prompts up to their real tokens; prompts
    // of different lengths are continued in separate batches (apex generate).
    return lengths ? rows.map((r, i) => r.subarray(0, lengths[i]!)) : rows;
  }
  if (options.prompts !== undefined && options.prompts.length > 0) {
    const tokenizer = options.tokenizer;
    if (!tokenizer) throw new UsageError('this model has no tokenizer.json: give the prompt as token ids with --input-ids', 'NO_TOKENIZER');
    const chat = options.chat;
    if (!chat) return options.prompts.map((text) => Int32Array.from(tokenizer.encode(text)));
    return options.prompts.map((text) => {
      const messages: ChatMessage[] = [...(chat.system !== undefined ? [{ role: 'system', content: chat.system }] : []), { role: 'user', content: text }];
      return Int32Array.from(chatPromptIds(tokenizer, messages, chat.renderer));
    });
  }
  const bos = options.tokenizer?.bosId ?? options.spec.bosTokenId;
  if (bos === undefined) throw new UsageError('the model defines no BOS token: give --prompt or --input-ids');
  return [Int32Array.from([bos])];
}

/**
 * Sequences as one [B, T] block; rows that stopped early are padded on the right with `pad`, as
 * transformers pads a batch, and `attentionMask` is 1 for real tokens, 0 for the padding.
 */
export function paddedIds(sequences: readonly Int32Array[], pad: number): { ids: Int32Array; attentionMask: Int32Array; shape: [number, number] } {
  const T = Math.max(...sequences.map((s) => s.length));
  const ids = new Int32Array(sequences.length * T).fill(pad);
  const attentionMask = new Int32Array(sequences.length * T);
  sequences.forEach((s, b) => {
    ids.set(s, b * T);
    attentionMask.fill(1, b * T, b * T + s.length);
  });
  return { ids, attentionMask, shape: [sequences.length, T] };
}
