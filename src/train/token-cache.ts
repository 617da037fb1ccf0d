/**
 * A content-addressed cache of tokenized data files, so that the same data is tokenized once and
 * not again by every `apex finetune --stage n`, `--resume`, rerun of `apex run`, `apex eval` or
 * `apex analyze` (tokenizing runs at about 1 MB/s, chat data slower: a 1 GB data set is an hour).
 *
 * One entry per data file: the token ids of all its documents (and for chat the assistant masks),
 * before the train/held-out split, so every split and every `samples` choice reads the same
 * entry. An entry's name is the sha256 of a canonical JSON key of everything that decides those
 * tokens: the file's bytes (sha256), its kind and how text is cut into documents, the tokenizer's
 * files, the chat template in use, the versions of @huggingface/tokenizers and @huggingface/jinja,
 * and the source of apex's own modules that read, cut and tokenize data, so a change to any of
 * them can never hit an old entry. The key is stored in the entry too and checked on read.
 *
 * Location: `$APEX_CACHE_DIR/tokens/`, else `${XDG_CACHE_HOME:-~/.cache}/apex/tokens/`.
 * `APEX_TOKEN_CACHE=0` (false, no, off) turns it off. Entries are safetensors files (flat I32
 * `ids`, I32 `lengths` per document, U8 `mask` for chat), written atomically (temporary name with
 * the pid, then rename), so concurrent apex processes are safe. The cache is only ever a
 * shortcut: an unreadable or mismatched entry is re-tokenized and overwritten, and a cache folder
 * that cannot be written never fails the command (one warning, then it goes on without).
 */
import { createHash } from 'node:crypto';
import { access, mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ApexTokenizer } from '../model/tokenizer.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors-writer.js';
import { TEXT_DOCUMENT_CHARS, type SourceFile } from './data-sources.js';
import { canonicalJson } from '../util/canonical-json.js';

/** Bumped when the entry layout changes. */
const FORMAT = 'apex-token-cache/1';
const KEY_METADATA = 'apex_token_cache_key';
const SUM_METADATA = 'apex_token_cache_sha256';

/** sha256 of an entry's tensor bytes, in order (ids, lengths, mask). */
function entrySum(parts: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest('hex');
}

/** A file's documents as tokens: ids per document, and for chat the assistant mask per document. */
export interface FileTokens {
  ids: ArrayLike<number>[];
  masks?: Uint8Array[];
}

/** The token cache folder, or undefined when APEX_TOKEN_CACHE turns it off. Read at each load (tests set it). */
export function tokenCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const flag = env.APEX_TOKEN_CACHE?.trim().toLowerCase();
  if (flag !== undefined && ['0', 'false', 'no', 'off'].includes(flag)) return undefined;
  if (env.APEX_CACHE_DIR) return join(env.APEX_CACHE_DIR, 'tokens');
  const base = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'apex', 'tokens');
}

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

async function sha256OrNull(path: string): Promise<string | null> {
  try {
    return sha256(await readFile(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * sha256 of apex's modules that decide a file's tokens, as they run: the running file's own
 * extension (.js from dist/, .ts under vitest/tsx) names its siblings.
 */
let codeDigest: Promise<string> | undefined;
function apexCodeDigest(): Promise<string> {
  return (codeDigest ??= (async () => {
    const self = fileURLToPath(import.meta.url);
    const ext = extname(self);
    const here = dirname(self);
    const modules = ['token-cache', 'data', 'data-sources', 'tokenize-parallel', 'tokenize-worker', '../model/chat-template', '../model/tokenizer'];
    const hash = createHash('sha256');
    for (const m of modules) {
      hash.update(m).update('\0').update(await readFile(join(here, `${m}${ext}`))).update('\0');
    }
    return hash.digest('hex');
  })());
}

/** A dependency's version, found the way Node resolves it: node_modules of this folder or one above. */
async function packageVersion(name: string): Promise<string> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(await readFile(join(dir, 'node_modules', name, 'package.json'), 'utf8')) as { version?: unknown };
      return String(pkg.version);
    } catch {
      const up = dirname(dir);
      if (up === dir) throw new Error(`cannot find ${name}/package.json`);
      dir = up;
    }
  }
}

let versions: Promise<Record<string, string>> | undefined;
function libraryVersions(): Promise<Record<string, string>> {
  return (versions ??= (async () => ({
    '@huggingface/tokenizers': await packageVersion('@huggingface/tokenizers'),
    '@huggingface/jinja': await packageVersion('@huggingface/jinja'),
  }))());
}

/** sha256 of the tokenizer's files (those tokenizer.ts reads); undefined when it has no tokenizer.json to name it by. */
const tokenizerDigests = new WeakMap<ApexTokenizer, Promise<Record<string, string | null> | undefined>>();
function tokenizerIdentity(tokenizer: ApexTokenizer): Promise<Record<string, string | null> | undefined> {
  let p = tokenizerDigests.get(tokenizer);
  if (!p) {
    p = (async () => {
      const files: Record<string, string | null> = {};
      for (const name of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja']) {
        files[name] = await sha256OrNull(join(tokenizer.source, name));
      }
      return files['tokenizer.json'] === null ? undefined : files;
    })();
    tokenizerDigests.set(tokenizer, p);
  }
  return p;
}

export interface TokenCacheOptions {
  tokenizer: ApexTokenizer;
  /** Chat data: the template the conversations are rendered with (the model's or the Tulu fallback). */
  chatTemplate?: string;
  onWarning?: (message: string) => void;
}

/** The cache for one load: files looked up by their key, written after a miss. */
export class TokenCache {
  /** Files read from the cache in this load. */
  hits = 0;
  private writable = true;

  private constructor(
    private readonly dir: string,
    private readonly common: Record<string, unknown>,
    private readonly onWarning: ((message: string) => void) | undefined,
  ) {}

  /** The cache for this tokenizer, or undefined when it is off or cannot be used (said once). */
  static async open(options: TokenCacheOptions): Promise<TokenCache | undefined> {
    const dir = tokenCacheDir();
    if (dir === undefined) return undefined;
    let identity: Record<string, string | null> | undefined;
    let code: string;
    let libraries: Record<string, string>;
    try {
      identity = await tokenizerIdentity(options.tokenizer);
      code = await apexCodeDigest();
      libraries = await libraryVersions();
    } catch (e) {
      options.onWarning?.(`token cache not used: cannot identify the tokenizer or apex's code (${(e as Error).message})`);
      return undefined;
    }
    if (identity === undefined) return undefined; // no tokenizer files to key entries by
    try {
      await mkdir(dir, { recursive: true });
    } catch (e) {
      options.onWarning?.(`token cache: cannot create ${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); tokenizing without it`);
      return undefined;
    }
    const common = {
      // The tokenizers' regexes (\p{L}, …) and Unicode normalization use the runtime's tables.
      runtime: { unicode: process.versions.unicode ?? null, icu: process.versions.icu ?? null },
      tokenizer: identity,
      chatTemplate: options.chatTemplate !== undefined ? sha256(options.chatTemplate) : null,
      libraries,
      code,
    };
    return new TokenCache(dir, common, options.onWarning);
  }

  /** The canonical key of a file (sorted keys, so the same inputs give the same JSON). */
  private key(source: SourceFile): string {
    const key = {
      format: FORMAT,
      file: source.sha256,
      kind: source.kind,
      // How a plain text file is cut into documents, and how documents are encoded.
      cut: source.kind === 'text' ? { textDocumentChars: TEXT_DOCUMENT_CHARS, trim: true, lineEnds: 'lf' } : null,
      encode: source.kind === 'jsonl-chat' ? 'tokenizeChat' : { addSpecialTokens: false },
      documents: source.documents.length,
      ...this.common,
    };
    return canonicalJson(key);
  }

  private path(key: string): string {
    return join(this.dir, `${sha256(key)}.safetensors`);
  }

  /** The key of the file's entry: files with the same key (the same file given twice) share one entry. */
  entryKey(source: SourceFile): string {
    return this.key(source);
  }

  /** Whether the file has an entry (which may still turn out unusable when read): a cheap look before deciding how to tokenize. */
  async has(source: SourceFile): Promise<boolean> {
    try {
      await access(this.path(this.key(source)));
      return true;
    } catch {
      return false;
    }
  }

  /** The file's tokens from the cache, or undefined on a miss. A bad entry is a miss (said once). */
  async read(source: SourceFile): Promise<FileTokens | undefined> {
    const key = this.key(source);
    const path = this.path(key);
    let file: SafetensorsFile;
    try {
      file = await SafetensorsFile.open(path);
    } catch (e) {
      if ((e as { code?: string }).code === 'NOT_FOUND') return undefined;
      this.onWarning?.(`token cache: ignoring unreadable entry ${path} (${(e as Error).message}); tokenizing again`);
      return undefined;
    }
    try {
      if (file.metadata[KEY_METADATA] !== key) throw new Error('its key does not match');
      const chat = source.kind === 'jsonl-chat';
      const lengthBytes = await file.readBytes('lengths');
      const lengths = new Int32Array(lengthBytes.buffer, lengthBytes.byteOffset, lengthBytes.byteLength / 4);
      if (lengths.length !== source.documents.length) throw new Error('wrong number of documents');
      const idBytes = await file.readBytes('ids');
      const ids = new Int32Array(idBytes.buffer, idBytes.byteOffset, idBytes.byteLength / 4);
      const mask = chat ? await file.readBytes('mask') : undefined;
      if (mask !== undefined && mask.length !== ids.length) throw new Error('mask and ids differ in length');
      if (file.metadata[SUM_METADATA] !== entrySum([idBytes, lengthBytes, ...(mask ? [mask] : [])])) throw new Error('its bytes do not match their checksum');
      const out: FileTokens = { ids: [], ...(chat ? { masks: [] } : {}) };
      let at = 0;
      for (const n of lengths) {
        if (n < 0 || at + n > ids.length) throw new Error('document lengths exceed the ids');
        out.ids.push(ids.subarray(at, at + n));
        out.masks?.push(mask!.subarray(at, at + n));
        at += n;
      }
      if (at !== ids.length) throw new Error('document lengths do not cover the ids');
      this.hits++;
      return out;
    } catch (e) {
      this.onWarning?.(`token cache: ignoring entry ${path} (${(e as Error).message}); tokenizing again`);
      return undefined;
    } finally {
      await file.close().catch(() => {});
    }
  }

  /** Stores a file's tokens. Never throws: a cache that cannot be written is said once and then left alone. */
  async write(source: SourceFile, tokens: FileTokens): Promise<void> {
    // Content from a FIFO or stdin-like file can be read once only: its sha256 names no file to find again.
    if (!this.writable || !source.regularFile) return;
    const key = this.key(source);
    const total = tokens.ids.reduce((n, t) => n + t.length, 0);
    const ids = new Int32Array(total);
    const mask = tokens.masks ? new Uint8Array(total) : undefined;
    const lengths = new Int32Array(tokens.ids.length);
    let at = 0;
    tokens.ids.forEach((t, d) => {
      ids.set(t, at);
      mask?.set(tokens.masks![d]!, at);
      lengths[d] = t.length;
      at += t.length;
    });
    const bytes = (a: Int32Array | Uint8Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const tensors: TensorToWrite[] = [
      { name: 'ids', dtype: 'I32', shape: [total], data: bytes(ids) },
      { name: 'lengths', dtype: 'I32', shape: [lengths.length], data: bytes(lengths) },
      ...(mask ? [{ name: 'mask', dtype: 'U8' as const, shape: [total], data: mask }] : []),
    ];
    try {
      // Not durable (no fsyncs, no scan of the folder for dead temporaries): a cache holds
      // thousands of entries, and that upkeep made a first load of 3,000 small files 14 s instead
      // of 1 s. The checksum makes an entry damaged by a crash a miss, never wrong tokens.
      await writeSafetensors(this.path(key), tensors, { format: 'apex-tokens', [KEY_METADATA]: key, [SUM_METADATA]: entrySum(tensors.map((t) => t.data as Uint8Array)) }, { durable: false });
    } catch (e) {
      this.writable = false;
      this.onWarning?.(`token cache: cannot write to ${this.dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); tokenizing without it`);
    }
  }
}
