/**
 * Reading `--data` inputs into documents: plain text files (and folders of them), JSONL with a
 * `text` field, JSONL with chat `messages`. Each file's kind is detected from its name and
 * first record; every file's sha256 is recorded for provenance. A `.json` file named on its own
 * is read as Hugging Face `datasets` reads one: a JSON array of the same records, or JSON Lines;
 * folders skip `.json` files (a model's or tool's config files are not data).
 *
 * Plain text: a file is one document, unless it is longer than 2 × TEXT_DOCUMENT_CHARS, in which
 * case it is cut into documents of about TEXT_DOCUMENT_CHARS characters at paragraph breaks
 * (blank lines), falling back to line breaks, then sentence ends, then spaces. Long single files
 * thus still give enough documents for a held-out split. Plain-text documents are trimmed of
 * surrounding whitespace (EOS marks their boundary) and their line ends read as LF (CRLF, CR);
 * JSONL `text` values are kept verbatim.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readUpTo } from '../io/pipe-stream.js';
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { InputError } from '../errors.js';
import type { ChatMessage } from '../model/chat-template.js';

export const TEXT_DOCUMENT_CHARS = 16_384;
/** Text inputs are read whole; larger files should be split into several files. */
export const MAX_TEXT_FILE_BYTES = 256 * 1024 * 1024;

const TEXT_EXTENSIONS = new Set(['.txt', '.md']);
const JSONL_EXTENSIONS = new Set(['.jsonl', '.ndjson']);
const JSON_EXTENSION = '.json';

export type SourceKind = 'text' | 'jsonl-text' | 'jsonl-chat';

export interface TextDocument {
  readonly kind: 'text';
  readonly text: string;
  /** `file`, `file:line` or `file[index]` (a .json array), for messages. */
  readonly origin: string;
}
export interface ChatDocument {
  readonly kind: 'chat';
  readonly messages: ChatMessage[];
  readonly origin: string;
}
export type DataDocument = TextDocument | ChatDocument;

export interface SourceFile {
  readonly path: string;
  readonly sha256: string;
  readonly kind: SourceKind;
  readonly documents: DataDocument[];
  /** False for a FIFO or other non-regular file (e.g. /dev/stdin): its content cannot be read again, so it is never cached. */
  readonly regularFile: boolean;
}

/** Expands files and folders (recursively: *.txt, *.md, *.jsonl, *.ndjson; hidden entries skipped) into a sorted file list. */
export async function expandDataPaths(paths: readonly string[]): Promise<string[]> {
  const files: string[] = [];
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch (e) {
      throw new InputError(`${p}: data path not found (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'NOT_FOUND');
    }
    if (st.isDirectory()) {
      const found = await walk(p);
      if (found.length === 0) throw new InputError(`${p}: folder holds no .txt, .md, .jsonl or .ndjson files`, 'NO_DATA');
      files.push(...found);
    } else {
      files.push(p);
    }
  }
  return files;
}

async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(full)));
    else if (e.isFile()) {
      const ext = extname(e.name).toLowerCase();
      if (TEXT_EXTENSIONS.has(ext) || JSONL_EXTENSIONS.has(ext)) out.push(full);
    }
  }
  return out;
}

/** sha256 of a file, streamed (works for files of any size). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function readUtf8(path: string, signal?: AbortSignal): Promise<{ text: string; sha256: string; regularFile: boolean }> {
  const st = await stat(path);
  if (st.size > MAX_TEXT_FILE_BYTES) {
    throw new InputError(`${path}: ${st.size} bytes is more than the ${MAX_TEXT_FILE_BYTES}-byte limit for one data file; split it into several files`, 'DATA_FILE_TOO_LARGE');
  }
  // A pipe or device (--data /dev/stdin) has no size to check first: read it up to the limit.
  const tooLarge = () => new InputError(`${path}: more than the ${MAX_TEXT_FILE_BYTES}-byte limit for one data file (read from a pipe or device, so not known before reading); split it into several files`, 'DATA_FILE_TOO_LARGE');
  const bytes = st.isFile() ? await readFile(path) : await readUpTo(path, MAX_TEXT_FILE_BYTES, tooLarge, signal);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const hint = extname(path).toLowerCase() === '.safetensors' ? ' (token ids in safetensors are read with --input-ids of apex finetune, analyze or eval, not as text data)' : '';
    throw new InputError(`${path}: not valid UTF-8 text${hint}`, 'BAD_ENCODING');
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  return { text, sha256: createHash('sha256').update(bytes).digest('hex'), regularFile: st.isFile() };
}

/** Reads one data file into documents. */
export async function readSourceFile(path: string, signal?: AbortSignal): Promise<SourceFile> {
  const { text, sha256, regularFile } = await readUtf8(path, signal);
  const ext = extname(path).toLowerCase();
  if (JSONL_EXTENSIONS.has(ext) || ext === JSON_EXTENSION) {
    const { kind, documents } = ext !== JSON_EXTENSION ? parseJsonl(path, text) : text.trimStart().startsWith('[') ? parseJsonArray(path, text) : jsonLinesInJson(path, text);
    return { path, sha256, kind, documents, regularFile };
  }
  // Line ends as Python's text mode (and so Hugging Face datasets' text loader) reads them:
  // CRLF and CR become LF, so a file saved on Windows gives the same tokens.
  const documents: DataDocument[] = splitLongText(text.replace(/\r\n?/g, '\n'), TEXT_DOCUMENT_CHARS)
    .map((t) => t.trim())
    .filter((t) => t.length > 0)
    .map((t) => ({ kind: 'text' as const, text: t, origin: path }));
  return { path, sha256, kind: 'text', documents, regularFile };
}

/** Parses JSONL of `{"text": …}` or `{"messages": [{role, content}, …]}` records (one kind per file). */
export function parseJsonl(path: string, content: string): { kind: 'jsonl-text' | 'jsonl-chat'; documents: DataDocument[] } {
  const records: DataRecord[] = [];
  content.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line.length === 0) return;
    const where = `${path}:${index + 1}`;
    try {
      records.push({ where, at: `line ${index + 1}`, value: JSON.parse(line) });
    } catch (e) {
      throw new InputError(`${where}: not valid JSON (${(e as Error).message})`, 'BAD_JSONL');
    }
  });
  return parseRecords(path, records, 'line');
}

/** A .json file that is not an array: JSON Lines, or an error that says what a .json data file may hold. */
function jsonLinesInJson(path: string, content: string): { kind: 'jsonl-text' | 'jsonl-chat'; documents: DataDocument[] } {
  try {
    return parseJsonl(path, content);
  } catch (e) {
    if (e instanceof InputError) throw new InputError(`${e.message}; a .json data file holds a JSON array of records or JSON Lines`, e.code, { cause: e });
    throw e;
  }
}

/** Parses a JSON array of the records parseJsonl takes, one per element. */
export function parseJsonArray(path: string, content: string): { kind: 'jsonl-text' | 'jsonl-chat'; documents: DataDocument[] } {
  let value: unknown;
  try {
    value = JSON.parse(content);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message}); a .json data file holds an array of records or JSON Lines`, 'BAD_JSONL');
  }
  if (!Array.isArray(value)) throw new InputError(`${path}: a .json data file must hold an array of records or JSON Lines`, 'BAD_JSONL');
  return parseRecords(path, value.map((v, i) => ({ where: `${path}[${i}]`, at: `record ${i}`, value: v as unknown })), 'record');
}

interface DataRecord {
  /** `file:line` or `file[index]`, for messages and origins. */
  readonly where: string;
  /** `line n` or `record i`, to point back at an earlier record. */
  readonly at: string;
  readonly value: unknown;
}

function parseRecords(path: string, records: readonly DataRecord[], unit: 'line' | 'record'): { kind: 'jsonl-text' | 'jsonl-chat'; documents: DataDocument[] } {
  const documents: DataDocument[] = [];
  let kind: 'jsonl-text' | 'jsonl-chat' | undefined;
  let kindAt = '';
  for (const { where, at, value: record } of records) {
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      throw new InputError(`${where}: each ${unit} must be a JSON object with a string "text" or an array "messages"`, 'BAD_JSONL');
    }
    const r = record as Record<string, unknown>;
    const hasText = 'text' in r;
    const hasMessages = 'messages' in r;
    if (hasText === hasMessages) {
      throw new InputError(`${where}: each ${unit} must have exactly one of "text" (a string) or "messages" (an array of {role, content})`, 'BAD_JSONL');
    }
    const recordKind = hasText ? 'jsonl-text' : 'jsonl-chat';
    if (kind === undefined) {
      kind = recordKind;
      kindAt = at;
    } else if (kind !== recordKind) {
      throw new InputError(
        `${where}: mixes ${recordKind === 'jsonl-chat' ? 'chat "messages"' : '"text"'} records with ${kind === 'jsonl-chat' ? 'chat "messages"' : '"text"'} records (${kindAt}); use one kind per file`,
        'MIXED_JSONL',
      );
    }
    if (hasText) {
      if (typeof r.text !== 'string') throw new InputError(`${where}: "text" must be a string`, 'BAD_JSONL');
      if (r.text.length > 0) documents.push({ kind: 'text', text: r.text, origin: where });
    } else {
      documents.push({ kind: 'chat', messages: parseMessages(where, r.messages), origin: where });
    }
  }
  if (kind === undefined) throw new InputError(`${path}: no records (the file is empty)`, 'NO_DATA');
  return { kind, documents };
}

function parseMessages(where: string, value: unknown): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new InputError(`${where}: "messages" must be a non-empty array of {role, content}`, 'BAD_JSONL');
  }
  const messages = value.map((m, i) => {
    if (m === null || typeof m !== 'object' || typeof (m as ChatMessage).role !== 'string' || typeof (m as ChatMessage).content !== 'string') {
      throw new InputError(`${where}: messages[${i}] must be an object with string "role" and "content"`, 'BAD_JSONL');
    }
    return { role: (m as ChatMessage).role, content: (m as ChatMessage).content };
  });
  if (!messages.some((m) => m.role === 'assistant')) {
    throw new InputError(`${where}: the conversation has no "assistant" message, so it has no tokens to learn or score`, 'BAD_JSONL');
  }
  return messages;
}

/** Reads all files, checking that chat and text data are not mixed (chat is not packed, text is). */
export async function readSources(paths: readonly string[], signal?: AbortSignal): Promise<SourceFile[]> {
  const files = await expandDataPaths(paths);
  const sources: SourceFile[] = [];
  for (const f of files) sources.push(await readSourceFile(f, signal));
  const chat = sources.find((s) => s.kind === 'jsonl-chat');
  const text = sources.find((s) => s.kind !== 'jsonl-chat');
  if (chat && text) {
    // A problem of the input data, like chat and text records in one file (MIXED_JSONL): exit 3.
    throw new InputError(`data mixes chat JSONL (${chat.path}) with text (${text.path}); chat conversations and packed text cannot be combined in one data set`, 'MIXED_DATA');
  }
  return sources;
}

/** Where to cut a long text at or after `from`: paragraph, line, sentence, word, in that order of preference. */
function cutPoint(text: string, from: number, window: number): number {
  const slice = text.slice(from, from + window);
  for (const pattern of [/\n[ \t]*\n\s*/, /\n\s*/, /[.!?]["'”’)\]]?\s+/, /\s+/]) {
    const m = pattern.exec(slice);
    if (m) return from + m.index + m[0].length;
  }
  // No break anywhere: cut at the window's end, but never between the two halves of a
  // character outside the BMP (an emoji is two UTF-16 code units).
  const cut = from + window;
  const before = text.charCodeAt(cut - 1);
  return before >= 0xd800 && before <= 0xdbff ? cut - 1 : cut;
}

/** Cuts a text into pieces of about `target` characters at natural breaks; short texts stay whole. */
export function splitLongText(text: string, target: number): string[] {
  if (text.length <= 2 * target) return [text];
  const pieces: string[] = [];
  let start = 0;
  while (text.length - start > 2 * target) {
    const cut = cutPoint(text, start + target, target);
    pieces.push(text.slice(start, cut));
    start = cut;
  }
  pieces.push(text.slice(start));
  return pieces;
}
