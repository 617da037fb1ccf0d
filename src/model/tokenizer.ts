/**
 * A model's tokenizer: `tokenizer.json` run by @huggingface/tokenizers, with the special-token
 * rules of the model folder applied the way Hugging Face `transformers` applies them.
 *
 * BOS/EOS: the tokenizer's post-processor decides which special tokens wrap a text (for the
 * LLaMA fixture a TemplateProcessing that prepends `<s>`); `add_bos_token` / `add_eos_token` in
 * tokenizer_config.json, when present, override it (true adds the token if the post-processor
 * does not, false removes it). A BOS is never doubled: when the text itself already starts with
 * the BOS token (e.g. a chat template that writes `{{ bos_token }}`), none is added.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../errors.js';
import { MAX_SMALL_FILE_BYTES, MAX_TOKENIZER_FILE_BYTES, readBoundedText } from '../io/bounded-read.js';

export interface EncodeOptions {
  /** Wrap the text in the model's special tokens (BOS/EOS as the post-processor and config say). Default true. */
  addSpecialTokens?: boolean;
}

export interface ApexTokenizer {
  /** Token ids of `text`. */
  encode(text: string, options?: EncodeOptions): number[];
  /** Text of `ids`; special tokens are kept unless `skipSpecialTokens`. Empty ids give ''. */
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
  /** Id of a token string (special or not), or undefined. */
  tokenToId(token: string): number | undefined;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  /** Padding id: the configured pad token, else EOS. */
  readonly padId: number | undefined;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  /**
   * The special tokens transformers hands a chat template (its special_tokens_map): bos_token,
   * eos_token, unk_token, sep_token, pad_token, cls_token, mask_token when configured, and
   * additional_special_tokens.
   */
  readonly specialTokens: Readonly<Record<string, string | readonly string[]>>;
  /** Special ids the post-processor (adjusted by the config) puts before and after a text. */
  readonly prefixIds: readonly number[];
  readonly suffixIds: readonly number[];
  /**
   * Where the tokenizer cuts `text` at its added tokens before anything else sees it ([start, end)
   * of each match, left to right, the way @huggingface/tokenizers matches them: at each position
   * the longest added token, else the next position). A text that starts at one of these starts
   * is tokenized the same alone as after the text before it, so the token count of a prefix is
   * the count up to the last match before its end plus the count of the rest from there
   * (chat-template.ts). Undefined when that does not hold: an added token that strips the
   * whitespace on its left (lstrip) changes the text before its match.
   */
  addedTokenMatches(text: string): Array<[number, number]> | undefined;
  /** Jinja chat template from tokenizer_config.json `chat_template` or chat_template.jinja. */
  readonly chatTemplate: string | undefined;
  /** The file chatTemplate was read from (tokenizer_config.json or chat_template.jinja), for messages. */
  readonly chatTemplateFile?: string;
  /** tokenizer_config.json's chat_template when apex cannot use it (BAD_CHAT_TEMPLATE): thrown where a chat template is needed. */
  readonly chatTemplateError?: InputError;
  /** The folder the tokenizer came from. */
  readonly source: string;
}

type TokenizerConfig = Record<string, unknown>;

/** The single special tokens of transformers' special_tokens_map, as tokenizer_config.json names them. */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/** A special-token entry in tokenizer_config.json is a string or an AddedToken object. */
function tokenString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function readJson(path: string, maxBytes = MAX_SMALL_FILE_BYTES): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readBoundedText(path, maxBytes, 'UNREADABLE');
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'UNREADABLE');
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as Record<string, unknown>;
  } catch (e) {
    throw new InputError(`${path}: invalid JSON (${(e as Error).message})`, 'BAD_JSON');
  }
}

/**
 * Chat template: a string, or a list of named templates of which `default` is used (as
 * transformers: a list without one is refused there too); undefined when the key is absent or
 * null. Any other value is refused rather than read as "no template", which would render
 * conversations in the Tulu format instead of the model's.
 */
function chatTemplateFromConfig(config: TokenizerConfig, path: string): string | undefined {
  const t = config.chat_template;
  if (t === undefined || t === null) return undefined;
  if (typeof t === 'string') return t;
  const bad = (detail: string) => new InputError(`${path}: ${detail}`, 'BAD_CHAT_TEMPLATE');
  if (Array.isArray(t)) {
    const entries = t as unknown[];
    if (entries.every((e) => e !== null && typeof e === 'object' && typeof (e as { name?: unknown }).name === 'string' && typeof (e as { template?: unknown }).template === 'string')) {
      const named = entries.find((e) => (e as { name: string }).name === 'default') as { template: string } | undefined;
      if (named) return named.template;
      throw bad(`chat_template lists templates ${entries.map((e) => (e as { name: string }).name).join(', ') || '(none)'} but none named "default" (transformers refuses it too); name the one to use "default"`);
    }
  }
  throw bad(`chat_template must be a string, or a list of {name, template} with a "default" one; got ${Array.isArray(t) ? 'a list of something else' : t !== null && typeof t === 'object' ? 'an object' : `a ${typeof t}`}`);
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  return prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);
}

/**
 * Derives the special tokens that the post-processor wraps around a single text by encoding a
 * probe text with and without special tokens.
 */
function postProcessorWrap(tok: Tokenizer): { prefix: number[]; suffix: number[] } {
  const probe = 'a';
  const plain: number[] = tok.encode(probe, { add_special_tokens: false }).ids;
  const full: number[] = tok.encode(probe, { add_special_tokens: true }).ids;
  for (let start = 0; start + plain.length <= full.length; start++) {
    if (plain.every((id, i) => full[start + i] === id)) {
      return { prefix: full.slice(0, start), suffix: full.slice(start + plain.length) };
    }
  }
  throw new InputError('tokenizer post-processor changes the tokens of the text itself; apex cannot tell which tokens are special', 'UNSUPPORTED_TOKENIZER');
}

/** Applies add_bos_token / add_eos_token (when the config sets them) to the post-processor's wrap. */
export function resolveSpecialWrap(
  wrap: { prefix: number[]; suffix: number[] },
  config: { addBos?: boolean; addEos?: boolean },
  bosId: number | undefined,
  eosId: number | undefined,
): { prefix: number[]; suffix: number[] } {
  let prefix = [...wrap.prefix];
  let suffix = [...wrap.suffix];
  if (bosId !== undefined) {
    if (config.addBos === true && prefix[0] !== bosId) prefix = [bosId, ...prefix];
    if (config.addBos === false) prefix = prefix.filter((id) => id !== bosId);
  }
  if (eosId !== undefined) {
    if (config.addEos === true && suffix[suffix.length - 1] !== eosId) suffix = [...suffix, eosId];
    if (config.addEos === false) suffix = suffix.filter((id) => id !== eosId);
  }
  return { prefix, suffix };
}

/** Loads the tokenizer of a model folder; undefined when it has no tokenizer.json. */
export async function loadTokenizer(modelDir: string): Promise<ApexTokenizer | undefined> {
  const tokenizerPath = join(modelDir, 'tokenizer.json');
  if (!(await exists(tokenizerPath))) return undefined;
  const tokenizerJson = await readJson(tokenizerPath, MAX_TOKENIZER_FILE_BYTES);
  const configPath = join(modelDir, 'tokenizer_config.json');
  const config: TokenizerConfig = (await exists(configPath)) ? await readJson(configPath) : {};
  const specialMapPath = join(modelDir, 'special_tokens_map.json');
  const specialMap: TokenizerConfig = (await exists(specialMapPath)) ? await readJson(specialMapPath) : {};
  const jinjaPath = join(modelDir, 'chat_template.jinja');
  const jinja = await exists(jinjaPath);
  let chatTemplate: string | undefined;
  // A chat_template apex cannot use fails what needs a chat template, not plain text.
  let chatTemplateError: InputError | undefined;
  try {
    chatTemplate = jinja ? await readBoundedText(jinjaPath, MAX_SMALL_FILE_BYTES, 'BAD_CHAT_TEMPLATE') : chatTemplateFromConfig(config, configPath);
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    chatTemplateError = e;
  }
  const chatTemplateFile = jinja ? jinjaPath : chatTemplate !== undefined ? configPath : undefined;

  let tok: Tokenizer;
  try {
    // transformers 5 no longer cleans up spaces on decode unless the config asks for it.
    tok = new Tokenizer(tokenizerJson, { ...config, clean_up_tokenization_spaces: config.clean_up_tokenization_spaces ?? false });
  } catch (e) {
    throw new InputError(`${tokenizerPath}: unsupported or invalid tokenizer (${(e as Error).message})`, 'UNSUPPORTED_TOKENIZER', { cause: e });
  }

  const single: Partial<Record<(typeof SPECIAL_TOKEN_KEYS)[number], string>> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const value = tokenString(config[key]) ?? tokenString(specialMap[key]);
    if (value !== undefined) single[key] = value;
  }
  const { bos_token: bosToken, eos_token: eosToken, pad_token: padToken } = single;
  const specialTokens: Record<string, string | string[]> = { ...single };
  const additional = Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : Array.isArray(specialMap.additional_special_tokens) ? specialMap.additional_special_tokens : undefined;
  if (additional !== undefined) specialTokens.additional_special_tokens = additional.map(tokenString).filter((t): t is string => t !== undefined);
  const bosId = bosToken !== undefined ? tok.token_to_id(bosToken) : undefined;
  const eosId = eosToken !== undefined ? tok.token_to_id(eosToken) : undefined;
  const padId = (padToken !== undefined ? tok.token_to_id(padToken) : undefined) ?? eosId;
  const addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : undefined;
  const addEos = typeof config.add_eos_token === 'boolean' ? config.add_eos_token : undefined;
  const { prefix, suffix } = resolveSpecialWrap(postProcessorWrap(tok), { addBos, addEos }, bosId, eosId);
  const vocabSize = tok.get_vocab(true).size;
  const addedTokenMatches = addedTokenMatcher(tokenizerJson);

  return {
    source: modelDir,
    vocabSize,
    bosId,
    eosId,
    padId,
    bosToken,
    eosToken,
    specialTokens,
    prefixIds: prefix,
    suffixIds: suffix,
    chatTemplate,
    ...(chatTemplateFile !== undefined ? { chatTemplateFile } : {}),
    ...(chatTemplateError !== undefined ? { chatTemplateError } : {}),
    tokenToId: (token) => tok.token_to_id(token),
    addedTokenMatches,
    encode(text, options = {}) {
      const body = tok.encode(text, { add_special_tokens: false }).ids;
      if (options.addSpecialTokens === false) return body;
      // Never double a special token that the text already produced itself.
      const head = startsWith(body, prefix) ? [] : prefix;
      const tail = suffix.length > 0 && startsWith(body.slice(body.length - suffix.length), suffix) ? [] : suffix;
      return [...head, ...body, ...tail];
    },
    decode(ids, options = {}) {
      const list = Array.from(ids);
      if (list.length === 0) return '';
      return tok.decode(list, { skip_special_tokens: options.skipSpecialTokens ?? false });
    },
  };
}

interface AddedTokenEntry {
  readonly content?: unknown;
  readonly lstrip?: unknown;
  readonly normalized?: unknown;
  readonly special?: unknown;
}

/**
 * The matcher of `ApexTokenizer.addedTokenMatches`: the added tokens @huggingface/tokenizers
 * splits the raw text at (those it does not normalize: `normalized` false, which is the default
 * for special tokens, or no normalizer at all), matched greedily as its DictionarySplitter does.
 */
export function addedTokenMatcher(tokenizerJson: Record<string, unknown>): (text: string) => Array<[number, number]> | undefined {
  const entries = Array.isArray(tokenizerJson.added_tokens) ? (tokenizerJson.added_tokens as AddedTokenEntry[]) : [];
  const hasNormalizer = tokenizerJson.normalizer !== null && tokenizerJson.normalizer !== undefined;
  const raw = entries.filter((t) => typeof t.content === 'string' && (t.content as string).length > 0 && !((t.normalized ?? t.special !== true) === true && hasNormalizer));
  if (raw.some((t) => t.lstrip === true)) return () => undefined;
  const contents = new Set(raw.map((t) => t.content as string));
  const longest = Math.max(0, ...[...contents].map((c) => c.length));
  const firstChars = new Set([...contents].map((c) => c[0]!));
  return (text) => {
    const matches: Array<[number, number]> = [];
    let i = 0;
    while (i < text.length) {
      let end = -1;
      if (firstChars.has(text[i]!)) {
        for (let len = Math.min(longest, text.length - i); len >= 1; len--) {
          if (contents.has(text.slice(i, i + len))) {
            end = i + len;
            break;
          }
        }
      }
      if (end < 0) {
        i++;
      } else {
        matches.push([i, end]);
        i = end;
      }
    }
    return matches;
  };
}
