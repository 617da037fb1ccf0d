/**
 * The data pipeline: from `--data` / `--input-ids` / a built-in corpus to fixed-length token
 * sequences (and loss masks for chat), with a record of exactly what was read.
 *
 * API (imported by eval, analysis and training):
 *   loadSequences({ data | inputIds | builtin, tokenizer, seqLen, samples, seed, split,
 *                   heldoutFraction, splitSeed, bosId, eosId }) → SequenceSet
 *
 * - `data`: text files or folders (*.txt, *.md recursively), JSONL (or .json) with `text`, or with
 *   chat `messages` (kind detected per file; see data-sources.ts for how long text files become
 *   documents). Text is packed (data-packing.ts): documents tokenized without special tokens,
 *   EOS between documents, each sequence BOS + seqLen − 1 stream tokens, tail dropped. Chat:
 *   one conversation per sequence, truncated/padded to seqLen, loss mask on assistant tokens
 *   (model/chat-template.ts); conversations left with no assistant token are dropped.
 * - `inputIds`: one I32/I64 [B, T] safetensors tensor (data-input-ids.ts); each row is a
 *   document and a sequence; rows longer than seqLen are truncated (result seqLen = min(T, seqLen)).
 * - `builtin`: 'out-of-domain' | 'in-domain' from fixtures/corpus (data-corpus.ts).
 * - `split`: 'all', or 'train' / 'heldout' = a seeded `heldoutFraction` (default 5%, at least one)
 *   of whole documents held out. The split is drawn with `splitSeed` (default 0), not `seed`, so
 *   runs with different seeds are evaluated on the same held-out documents. With separate
 *   `--eval-data`, callers load it with split 'all'.
 * - `samples`: keep a seeded choice (`seed`) of that many sequences, in their original order.
 * - `lossMasks[i][t]` = 1 when token t of sequence i is a prediction target (t ≥ 1); absent for
 *   packed text and input ids, where every position t ≥ 1 is a target.
 * - `source.documents` / `source.tokens`: documents in the chosen split / tokens in the returned
 *   sequences (padding excluded). Chat: `truncated` / `targetsLost` count the returned sequences
 *   (a sample's own), `wholeSplit` the same over all of the split's, `dropped` the split's.
 * - `heldout` (split 'train' / 'heldout'): which documents of each file the split held out, as
 *   index ranges (data-split.ts `HeldoutDocuments`; a stage writes it as heldout.json).
 * - Tokens of text and chat files are read from the token cache (token-cache.ts) when it holds
 *   the file, giving exactly the sets a fresh tokenization gives; `onProgress` says how many.
 * - Large data is tokenized in worker threads (tokenize-parallel.ts; `APEX_TOKENIZE_THREADS`),
 *   giving exactly the sets tokenizing in the main thread gives.
 */
import { createHash } from 'node:crypto';
import { InputError, UsageError } from '../errors.js';
import type { ApexTokenizer } from '../model/tokenizer.js';
import { rendererFor, tokenizeChat, type ChatMessage, type ChatRenderer } from '../model/chat-template.js';
import { builtinCorpus } from './data-corpus.js';
import { readInputIds } from './data-input-ids.js';
import { chatSequences, packDocuments, requireSequences } from './data-packing.js';
import { readSources, sha256File, type ChatDocument, type DataDocument, type SourceFile, type TextDocument } from './data-sources.js';
import { DEFAULT_HELDOUT_FRACTION, heldoutDocuments, sampleIndices, selectSplit, type HeldoutDocuments, type SplitName } from './data-split.js';
import { yieldForSignals } from '../util/yield-for-signals.js';
import { TokenCache, type FileTokens } from './token-cache.js';
import { pieceChars, tokenizeInWorkers, tokenizeThreadCap, workersCanLoad, type PieceDocuments } from './tokenize-parallel.js';
import type { TokenizeFailure } from './tokenize-worker.js';

export { builtinCorpus, BUILTIN_CORPORA, type BuiltinCorpusName } from './data-corpus.js';
export { DEFAULT_HELDOUT_FRACTION, type HeldoutDocuments, type SplitName } from './data-split.js';

export interface DataSpecRecord {
  kind: 'text' | 'jsonl-text' | 'jsonl-chat' | 'input-ids' | 'builtin';
  paths: string[];
  sha256: string[];
  seqLen: number;
  samples?: number;
  seed: number;
  split: SplitName;
  heldoutFraction: number;
  splitSeed: number;
  /** Name of the built-in corpus, when kind is 'builtin'. */
  builtin?: string;
  documents: number;
  /** Sequences in the set (what `samples` asked for, or fewer when the data gives fewer). */
  sequences: number;
  tokens: number;
  /** Chat conversations of the split dropped because truncation to seqLen left no assistant token (they give no sequence to sample). */
  dropped?: number;
  /** Chat: sequences of the set whose conversation lost some assistant tokens to truncation at seqLen. */
  truncated?: number;
  /** Chat: assistant tokens that truncation to seqLen removed from the set's sequences. */
  targetsLost?: number;
  /**
   * Chat: the truncation figures of every sequence of the split, before `samples` chose the set's
   * (`truncated` is the set's own when it took them all); `targetsLost` here also counts the
   * dropped conversations' assistant tokens, of `targets` in all (the truncation warning's figures). Records
   * without it (apex before 2026-11-28) gave these split-wide counts as `truncated` /
   * `targetsLost`, also for a sample.
   */
  wholeSplit?: { sequences: number; tokens: number; truncated: number; targetsLost: number; targets: number };
  /** Chat: the template the conversations were rendered with (the model's, or the Tulu format when it has none) and its sha256. */
  chatTemplate?: { source: 'model' | 'tulu'; sha256: string };
}

export interface SequenceSet {
  seqLen: number;
  sequences: Int32Array[];
  /** 1 where the token at position t is a prediction target (t ≥ 1); chat data only. */
  lossMasks?: Uint8Array[];
  /** Real (unpadded) tokens at the start of each sequence (the rest is padding); chat data and ids with an attention_mask only. */
  lengths?: number[];
  /** Chat: assistant tokens truncation removed from each sequence's conversation, so a sample's record counts its own. */
  targetsLost?: number[];
  /** Split 'train' or 'heldout': which documents of each file the split held out (a stage writes it as heldout.json). */
  heldout?: HeldoutDocuments;
  source: DataSpecRecord;
}

export interface LoadSequencesOptions {
  data?: string[];
  inputIds?: string;
  builtin?: string;
  tokenizer?: ApexTokenizer;
  seqLen: number;
  samples?: number;
  seed: number;
  split?: SplitName;
  /** Fraction of documents held out; default 0.05. */
  heldoutFraction?: number;
  /** Seed of the train/held-out split; default 0. */
  splitSeed?: number;
  /** Override the tokenizer's BOS / EOS ids. */
  bosId?: number;
  eosId?: number;
  /** Told when fewer sequences than `samples` exist, and when chat conversations were dropped. */
  onWarning?: (message: string) => void;
  /** How the warnings name `samples` (default `--samples`; a run config says e.g. `data.eval_samples`). */
  samplesName?: string;
  /** How messages name the sequence length (default `--seq-len`; a run config says `data.seq_len`). */
  seqLenName?: string;
  /** How messages name separate held-out data (default `--eval-data`; a run config says `data.eval`). */
  evalDataName?: string;
  /** Polled between pieces of tokenization (a large corpus takes minutes): Ctrl-C stops it. */
  signal?: AbortSignal;
  /** Told how many files were tokenized and how many of them came from the token cache (token-cache.ts). */
  onProgress?: (message: string) => void;
}

/** Characters tokenized between two returns to the event loop (≈ 0.1–0.5 s of work). */
const TOKENIZE_PIECE_CHARS = 1 << 18;

/** `items.map(encode)`, returning to the event loop every TOKENIZE_PIECE_CHARS characters so a signal can stop it. */
async function tokenizeInPieces<T, R>(items: readonly T[], encode: (item: T) => R, chars: (item: T) => number, signal: AbortSignal | undefined): Promise<R[]> {
  const out: R[] = [];
  let since = 0;
  for (const item of items) {
    out.push(encode(item));
    since += chars(item);
    if (since >= TOKENIZE_PIECE_CHARS) {
      since = 0;
      await yieldForSignals(signal);
    }
  }
  return out;
}

/**
 * Real (unpadded) tokens at the start of sequence `index`: its recorded length (chat data, ids
 * with an attention_mask); for a masked set made without lengths, up to its last loss target;
 * else the whole sequence (packed text and plain ids have no padding).
 */
export function realTokens(set: SequenceSet, index: number): number {
  const length = set.lengths?.[index];
  if (length !== undefined) return length;
  const mask = set.lossMasks?.[index];
  if (mask === undefined) return set.sequences[index]!.length;
  let last = mask.length - 1;
  while (last > 0 && !mask[last]) last--;
  return last + 1;
}

/**
 * A seeded choice of `k` of a set's sequences (all when k ≥ its size), in their order, with their
 * masks and lengths; the record says so (`samples`, real tokens). From a set loaded whole, the
 * same choice as loading the data with `samples: k` and this `seed`.
 */
export function sampleSequences(set: SequenceSet, k: number, seed: number): SequenceSet {
  if (k >= set.sequences.length) return set;
  const keep = sampleIndices(set.sequences.length, k, seed);
  const { truncated: _truncated, targetsLost: _targetsLost, ...source } = set.source;
  const lost = set.targetsLost ? keep.map((i) => set.targetsLost![i]!) : undefined;
  return {
    seqLen: set.seqLen,
    sequences: keep.map((i) => set.sequences[i]!),
    ...(set.lossMasks ? { lossMasks: keep.map((i) => set.lossMasks![i]!) } : {}),
    ...(set.lengths ? { lengths: keep.map((i) => set.lengths![i]!) } : {}),
    ...(lost ? { targetsLost: lost } : {}),
    // The record's truncation counts describe the sample's sequences: recounted, or left out when
    // the set does not say per sequence (the set's counts describe other sequences).
    source: { ...source, samples: k, seed, sequences: keep.length, tokens: keep.reduce((n, i) => n + realTokens(set, i), 0), ...(lost ? truncationCounts(lost) : {}) },
  };
}

/** A record's `truncated` / `targetsLost`, from the assistant tokens each of its sequences lost. */
function truncationCounts(lost: readonly number[]): { truncated: number; targetsLost: number } {
  return { truncated: lost.filter((n) => n > 0).length, targetsLost: lost.reduce((a, b) => a + b, 0) };
}

/** Warns when `samples` asked for more sequences than the data gives (all of them are used). */
function warnFewer(options: LoadSequencesOptions, available: number, where: string, seqLen = options.seqLen): void {
  if (options.samples !== undefined && options.samples > available) {
    options.onWarning?.(`${options.samplesName ?? '--samples'} ${options.samples}: ${where} gives only ${available} sequence${available === 1 ? '' : 's'} of ${seqLen} tokens; using all of them`);
  }
}

function checkOptions(o: LoadSequencesOptions): void {
  if (!Number.isInteger(o.seqLen) || o.seqLen < 2) throw new UsageError(`--seq-len must be an integer ≥ 2, got ${o.seqLen}`);
  if (o.samples !== undefined && (!Number.isInteger(o.samples) || o.samples < 1)) {
    throw new UsageError(`--samples must be a positive integer, got ${o.samples}`);
  }
  const f = o.heldoutFraction ?? DEFAULT_HELDOUT_FRACTION;
  if (!(f > 0 && f < 1)) throw new UsageError(`held-out fraction must be between 0 and 1, got ${f}`);
  const given = [o.data !== undefined && o.data.length > 0, o.inputIds !== undefined, o.builtin !== undefined].filter(Boolean).length;
  if (given > 1) throw new UsageError('give only one of --data, --input-ids or a built-in corpus');
  if (given === 0) throw new UsageError('no data: pass --data <files or folders> or --input-ids <file.safetensors>');
}

type RecordBase = Omit<DataSpecRecord, 'tokens' | 'dropped' | 'sequences'>;

export async function loadSequences(options: LoadSequencesOptions): Promise<SequenceSet> {
  checkOptions(options);
  const split = options.split ?? 'all';
  const heldoutFraction = options.heldoutFraction ?? DEFAULT_HELDOUT_FRACTION;
  const splitSeed = options.splitSeed ?? 0;
  const settings = { samples: options.samples, seed: options.seed, split, heldoutFraction, splitSeed };

  if (options.inputIds !== undefined) {
    const { rows, length, lengths, tensorName } = await readInputIds(options.inputIds);
    const seqLen = Math.min(length, options.seqLen);
    // A file narrower than --seq-len sets the length, so the rule --seq-len checks (≥ 2: a
    // position needs a next token to be a target) is checked here for it; without a target the
    // loss is 0 and the perplexity 1, which training would report and fuse as a result.
    if (length < 2) {
      throw new InputError(`${options.inputIds}: tensor '${tensorName}' has shape [${rows.length}, ${length}]: a row needs at least 2 tokens (a next token to predict); training, evaluation and analysis have nothing to score`, 'BAD_INPUT_IDS');
    }
    const indexed = rows.map((row, i) => ({ row, real: Math.min(seqLen, lengths?.[i] ?? seqLen) }));
    const chosen = selectSplit(indexed, split, heldoutFraction, splitSeed, options.evalDataName, options.inputIds);
    warnFewer(options, chosen.length, `${options.inputIds}${split === 'all' ? '' : ` (${split} split)`}`, seqLen);
    const kept = sampleIndices(chosen.length, options.samples, options.seed).map((i) => chosen[i]!);
    if (lengths !== undefined && kept.length > 0 && kept.every((k) => k.real < 2)) {
      const which = `${split === 'all' ? '' : ` of the ${split === 'heldout' ? 'held-out' : 'training'} split`}${options.samples !== undefined ? ' in the sample' : ''}`;
      throw new InputError(`${options.inputIds}: every row${which} has fewer than 2 real tokens (attention_mask): a row needs at least 2 (a next token to predict); training, evaluation and analysis have nothing to score`, 'BAD_INPUT_IDS');
    }
    const sequences = kept.map((k) => k.row.slice(0, seqLen));
    const sha256 = [await sha256File(options.inputIds)];
    // With an attention_mask the padding is no data: not a target, not counted in statistics.
    const padding = lengths !== undefined ? { lengths: kept.map((k) => k.real), lossMasks: kept.map((k) => Uint8Array.from({ length: seqLen }, (_, t) => (t >= 1 && t < k.real ? 1 : 0))) } : {};
    // Each row is a document.
    const heldout = split === 'all' ? {} : { heldout: heldoutDocuments([{ path: options.inputIds, sha256: sha256[0]!, documents: rows.length }], heldoutFraction, splitSeed, options.evalDataName) };
    return {
      seqLen,
      sequences,
      ...padding,
      ...heldout,
      source: { kind: 'input-ids', paths: [options.inputIds], sha256, seqLen, ...settings, documents: chosen.length, sequences: kept.length, tokens: kept.reduce((n, k) => n + k.real, 0) },
    };
  }

  const tokenizer = options.tokenizer;
  if (!tokenizer) {
    throw new UsageError('this model has no tokenizer.json, so text data cannot be tokenized: pass token ids with --input-ids <file.safetensors> (one I32/I64 [B, T] tensor; `apex generate --ids-out` writes one)', 'NO_TOKENIZER');
  }
  const sources = await readSources(options.builtin !== undefined ? builtinCorpus(options.builtin) : options.data!, options.signal);
  const all = sources.flatMap((s) => s.documents);
  // Indices, not documents: the token cache works per file and needs to know which documents of a file are chosen.
  const chosenIndices = selectSplit(all.map((_, i) => i), split, heldoutFraction, splitSeed, options.evalDataName, dataSourceName({ paths: sources.map((s) => s.path), ...(options.builtin !== undefined ? { builtin: options.builtin } : {}) }));
  const chosen = chosenIndices.map((i) => all[i]!);
  const selection: Selection = { sources, chosen: chosenIndices };
  const isChat = sources.some((s) => s.kind === 'jsonl-chat');
  const record: RecordBase = {
    kind: options.builtin !== undefined ? 'builtin' : isChat ? 'jsonl-chat' : sources.some((s) => s.kind === 'jsonl-text') ? 'jsonl-text' : 'text',
    paths: sources.map((s) => s.path),
    sha256: sources.map((s) => s.sha256),
    seqLen: options.seqLen,
    ...settings,
    ...(options.builtin !== undefined ? { builtin: options.builtin } : {}),
    documents: chosen.length,
  };
  const set = isChat ? await chatSet(selection, tokenizer, options, record) : await packedSet(selection, tokenizer, options, record);
  if (split === 'all') return set;
  const files = sources.map((s) => ({ path: s.path, sha256: s.sha256, documents: s.documents.length }));
  return { ...set, heldout: heldoutDocuments(files, heldoutFraction, splitSeed, options.evalDataName) };
}

/** The data's files and the indices (into all their documents, in order) of the documents in the split. */
interface Selection {
  sources: SourceFile[];
  chosen: number[];
}

/**
 * The chosen documents' tokens (`encode` of each, in order), read from the token cache per file
 * where it has them. A file the cache misses is tokenized whole (all splits: the next load, of
 * this split or another, then hits) and stored; without the cache only the chosen documents are
 * tokenized, as before. A document outside the split that fails to tokenize does not fail the
 * load (it would not have been tokenized without the cache): its file is just not stored.
 */
async function tokenizeSelection<R extends { ids: ArrayLike<number>; mask?: Uint8Array }>(
  selection: Selection,
  encode: (d: DataDocument) => R,
  chars: (d: DataDocument) => number,
  cache: TokenCache | undefined,
  options: LoadSequencesOptions,
  workers: WorkerSetup,
): Promise<R[]> {
  const files = selection.sources.filter((s) => s.documents.length > 0).length;
  const parallel = await tokenizeInThreads(selection, encode, chars, cache, options, workers);
  if (parallel !== undefined) {
    options.onProgress?.(`tokenized ${files} file${files === 1 ? '' : 's'}${cache ? `, ${cache.hits} from the token cache` : ''} (${parallel.threads} thread${parallel.threads === 1 ? '' : 's'})`);
    return parallel.out;
  }
  if (cache === undefined) {
    const all = selection.sources.flatMap((s) => s.documents);
    const out = await tokenizeInPieces(selection.chosen.map((i) => all[i]!), encode, chars, options.signal);
    options.onProgress?.(`tokenized ${files} file${files === 1 ? '' : 's'}`);
    return out;
  }
  const chosen = new Set(selection.chosen);
  const out: R[] = [];
  let first = 0; // index of the file's first document among all documents
  const since = { chars: 0 };
  for (const source of selection.sources) {
    const n = source.documents.length;
    const start = first;
    if (n > 0) await readOrTokenizeFile(source, (d) => chosen.has(start + d), encode, chars, cache, options, out, since);
    first += n;
  }
  options.onProgress?.(`tokenized ${files} file${files === 1 ? '' : 's'}, ${cache.hits} from the token cache`);
  return out;
}

/**
 * One file with the cache, in this thread: its `wanted` documents' tokens from the cache, or on a
 * miss from tokenizing every document of it (then stored), appended to `out`.
 */
async function readOrTokenizeFile<R extends { ids: ArrayLike<number>; mask?: Uint8Array }>(
  source: SourceFile,
  wanted: (d: number) => boolean,
  encode: (d: DataDocument) => R,
  chars: (d: DataDocument) => number,
  cache: TokenCache,
  options: LoadSequencesOptions,
  out: R[],
  since: { chars: number },
): Promise<void> {
  const n = source.documents.length;
  const cached = await cache.read(source);
  if (cached !== undefined) {
    // Cached ids are Int32Array views where `encode` gives number[]: the packers read both as ArrayLike<number>.
    for (let d = 0; d < n; d++) if (wanted(d)) out.push(fromCache(cached, d) as R);
    // Reading is async; still give a signal its turn between files.
    await yieldForSignals(options.signal);
    return;
  }
  const tokens: FileTokens = { ids: [] };
  const masks: Uint8Array[] = [];
  let complete = true;
  for (let d = 0; d < n; d++) {
    const doc = source.documents[d]!;
    let r: R;
    try {
      r = encode(doc);
    } catch (e) {
      if (wanted(d)) throw e;
      complete = false;
      continue;
    }
    if (wanted(d)) out.push(r);
    if (complete) {
      tokens.ids.push(r.ids);
      if (r.mask !== undefined) masks.push(r.mask);
    }
    since.chars += chars(doc);
    if (since.chars >= TOKENIZE_PIECE_CHARS) {
      since.chars = 0;
      await yieldForSignals(options.signal);
    }
  }
  if (complete) await cache.write(source, source.kind === 'jsonl-chat' ? { ...tokens, masks } : tokens);
}

/** What a worker thread needs to tokenize as the main thread does: the tokenizer's folder, and for chat the template source. */
interface WorkerSetup {
  modelDir: string;
  chatTemplate?: string;
}

/**
 * tokenizeSelection's work in worker threads, when it pays (tokenize-parallel.ts), else
 * undefined. The same documents are tokenized as in process (with the cache: every document of
 * each file it misses; without: the chosen ones), in pieces of contiguous documents of one file,
 * and the results are taken file by file in order: the same output, the same cache entries. A
 * document that failed in a worker is tokenized again here, so a load fails with the very error
 * the in-process path throws, at the same document. A file given twice shares its entry with its
 * first occurrence: it is read at its turn, after the first was stored, as in process.
 */
async function tokenizeInThreads<R extends { ids: ArrayLike<number>; mask?: Uint8Array }>(
  selection: Selection,
  encode: (d: DataDocument) => R,
  chars: (d: DataDocument) => number,
  cache: TokenCache | undefined,
  options: LoadSequencesOptions,
  workers: WorkerSetup,
): Promise<{ out: R[]; threads: number } | undefined> {
  const { sources } = selection;
  const chosen = new Set(selection.chosen);
  const starts: number[] = []; // index of each file's first document among all documents
  sources.reduce((at, s) => (starts.push(at), at + s.documents.length), 0);
  const deferred = new Set<number>(); // files sharing the entry of an earlier file
  if (cache !== undefined) {
    const seen = new Set<string>();
    for (const [f, source] of sources.entries()) {
      if (source.documents.length === 0) continue;
      const key = cache.entryKey(source);
      if (seen.has(key)) deferred.add(f);
      seen.add(key);
    }
  }
  /** Per file, the documents to tokenize in workers (undefined: none), for the files `missing` says the cache lacks. */
  const plan = (missing: (f: number) => boolean) => {
    const todo: Array<number[] | undefined> = [];
    let total = 0;
    for (const [f, source] of sources.entries()) {
      let docs: number[] | undefined;
      if (source.documents.length > 0 && !deferred.has(f) && (cache === undefined || missing(f))) {
        docs = [];
        for (let d = 0; d < source.documents.length; d++) if (cache !== undefined || chosen.has(starts[f]! + d)) docs.push(d);
        for (const d of docs) total += chars(source.documents[d]!);
        if (docs.length === 0) docs = undefined;
      }
      todo.push(docs);
    }
    return { todo, total };
  };
  const cut = (todo: Array<number[] | undefined>, size: number) => {
    const pieces: Array<{ file: number; docs: number[] }> = [];
    for (const [f, docs] of todo.entries()) {
      if (docs === undefined) continue;
      let piece: number[] = [];
      let at = 0;
      for (const d of docs) {
        piece.push(d);
        at += chars(sources[f]!.documents[d]!);
        if (at >= size) {
          pieces.push({ file: f, docs: piece });
          piece = [];
          at = 0;
        }
      }
      if (piece.length > 0) pieces.push({ file: f, docs: piece });
    }
    return pieces;
  };
  const chat = sources.some((s) => s.kind === 'jsonl-chat');
  const kind = chat ? 'chat' : 'text';
  // Too little even if the cache holds nothing: no need to look at it.
  if (tokenizeThreadCap(plan(() => true).total, kind) < 2) return undefined;
  // Decide from which entries exist (not reading them): the in-process path reads each at its turn.
  const exists: boolean[] = [];
  if (cache !== undefined) for (const [f, source] of sources.entries()) exists.push(source.documents.length > 0 && !deferred.has(f) && (await cache.has(source)));
  const first = plan((f) => !exists[f]);
  const cap = tokenizeThreadCap(first.total, kind);
  if (cap < 2 || first.total === 0 || !workersCanLoad(workers.modelDir)) return undefined;
  const size = pieceChars(first.total, cap);
  if (Math.min(cap, cut(first.todo, size).length) < 2) return undefined;

  // Workers it is: read the entries that exist (a bad one is a miss, said once), then tokenize the rest.
  const cached: Array<FileTokens | undefined> = [];
  for (const [f, source] of sources.entries()) {
    cached.push(cache !== undefined && exists[f] ? await cache.read(source) : undefined);
    if (exists[f]) await yieldForSignals(options.signal);
  }
  const { todo } = plan((f) => cached[f] === undefined);
  const pieces = cut(todo, size);
  const threads = Math.min(cap, pieces.length);

  const out: R[] = [];
  const since = { chars: 0 };
  let nextFile = 0; // files before it are in `out`
  // The file being received: its tokenized documents' results, or their failures, in order.
  let receiving: Array<{ r: R } | { failed: TokenizeFailure }> = [];
  /** Puts the files up to (not including) `upTo` into `out`: from the cache, from `receiving`, or (a file given twice) as in process. */
  const settle = async (upTo: number): Promise<void> => {
    for (; nextFile < upTo; nextFile++) {
      const f = nextFile;
      const source = sources[f]!;
      const n = source.documents.length;
      const wanted = (d: number) => chosen.has(starts[f]! + d);
      const docs = todo[f];
      const hit = cached[f];
      if (n === 0) continue;
      if (deferred.has(f)) {
        await readOrTokenizeFile(source, wanted, encode, chars, cache!, options, out, since);
      } else if (docs === undefined) {
        if (hit !== undefined) for (let d = 0; d < n; d++) if (wanted(d)) out.push(fromCache(hit, d) as R);
      } else {
        const tokens: FileTokens = { ids: [] };
        const masks: Uint8Array[] = [];
        let complete = true;
        docs.forEach((d, k) => {
          const got = receiving[k]!;
          if ('failed' in got) {
            if (wanted(d)) throw sameError(encode, source.documents[d]!, got.failed);
            complete = false;
            return;
          }
          const r = got.r;
          if (wanted(d)) out.push(r);
          if (complete) {
            tokens.ids.push(r.ids);
            if (r.mask !== undefined) masks.push(r.mask);
          }
        });
        receiving = [];
        if (cache !== undefined && complete) await cache.write(source, source.kind === 'jsonl-chat' ? { ...tokens, masks } : tokens);
      }
    }
  };
  const documents = pieces.map(({ file, docs }): PieceDocuments => {
    const all = sources[file]!.documents;
    return chat ? { chats: docs.map((d) => (all[d] as ChatDocument).messages as ChatMessage[]) } : { texts: docs.map((d) => (all[d] as TextDocument).text) };
  });
  if (pieces.length > 0) {
    await tokenizeInWorkers(documents, { modelDir: workers.modelDir, ...(workers.chatTemplate !== undefined ? { chatTemplate: workers.chatTemplate } : {}), threads, ...(options.signal ? { signal: options.signal } : {}) }, async (i, reply) => {
      const { file } = pieces[i]!;
      await settle(file); // the files before this piece's are complete
      const failures = new Map(reply.failed.map((x) => [x.index, x]));
      reply.ids.forEach((ids, k) => {
        const failed = failures.get(k);
        receiving.push(failed !== undefined ? { failed } : { r: (reply.masks ? { ids, mask: reply.masks[k]! } : { ids }) as unknown as R });
      });
      documents[i] = { texts: [] }; // let the piece's text go
    });
  }
  await settle(sources.length);
  return { out, threads: Math.max(1, threads) };
}

/** The error the in-process path throws for `doc`: tokenizing it again here throws it; else one like the worker's. */
function sameError<R>(encode: (d: DataDocument) => R, doc: DataDocument, failed: TokenizeFailure): unknown {
  try {
    encode(doc);
  } catch (e) {
    return e;
  }
  return new Error(`${doc.origin}: tokenizing in a worker thread failed (${failed.name}${failed.code ? ` ${failed.code}` : ''}: ${failed.message})`);
}

/** Document `d` of a cached file, in the shape `encode` gives it. */
function fromCache(cached: FileTokens, d: number): { ids: ArrayLike<number>; mask?: Uint8Array } {
  // Copies, not views: a view would keep the whole entry's buffer alive for a few documents (a held-out split).
  const ids = new Int32Array(cached.ids[d]!);
  return cached.masks ? { ids, mask: cached.masks[d]!.slice() } : { ids };
}

/** The data's files for messages: the paths (or built-in corpus), few by name. */
export function dataSourceName(record: Pick<DataSpecRecord, 'paths' | 'builtin'>): string {
  return record.builtin !== undefined ? `built-in corpus ${record.builtin}` : record.paths.length <= 3 ? record.paths.join(', ') : `${record.paths.length} files (${record.paths[0]}, …)`;
}

function describeSplit(record: RecordBase): string {
  // The files by name: "the data (0 documents)" alone does not say which file is empty.
  return `${record.split === 'all' ? 'the' : `the ${record.split} split of the`} data (${dataSourceName(record)}: ${record.documents} document${record.documents === 1 ? '' : 's'})`;
}

async function chatSet(selection: Selection, tokenizer: ApexTokenizer, options: LoadSequencesOptions, record: RecordBase): Promise<SequenceSet> {
  const padId = tokenizer.padId;
  if (padId === undefined) throw new InputError(`${tokenizer.source}: the tokenizer defines no pad or EOS token to pad chat sequences with`, 'NO_PAD_TOKEN');
  const renderer = rendererFor(tokenizer);
  if (renderer.isFallback) {
    options.onWarning?.(`${tokenizer.source}: the model has no chat template; conversations are rendered in the Tulu format (<|user|>, <|assistant|>, EOS after each answer). Add a chat_template to tokenizer_config.json to train in the model's own format`);
  }
  if (generationPromptIsEmpty(renderer)) {
    options.onWarning?.(`${tokenizer.source}: the chat template writes nothing for add_generation_prompt, so the assistant's role header (if any) is trained as part of each answer`);
  }
  const chars = (d: DataDocument) => (d as ChatDocument).messages.reduce((n, m) => n + (typeof m.content === 'string' ? m.content.length : 0), 0);
  const cache = await TokenCache.open({ tokenizer, chatTemplate: renderer.template, ...(options.onWarning ? { onWarning: options.onWarning } : {}) });
  const tokenized = await tokenizeSelection(selection, (doc) => {
    const d = doc as ChatDocument;
    try {
      const t = tokenizeChat(tokenizer, d.messages, renderer);
      return { ids: t.ids, mask: t.assistantMask };
    } catch (e) {
      // The template's own complaint does not say which conversation it was.
      if (e instanceof InputError) throw new InputError(`${d.origin}: ${e.message}`, e.code, { cause: e });
      throw e;
    }
  }, chars, cache, options, { modelDir: tokenizer.source, chatTemplate: renderer.template });
  const examples = tokenized.map((t) => ({ ids: t.ids, assistantMask: t.mask }));
  const built = chatSequences(examples, options.seqLen, padId);
  requireSequences(built.sequences.length, describeSplit(record), `every conversation lost its assistant tokens when truncated to ${options.seqLen} tokens`);
  const raise = options.seqLenName ?? '--seq-len';
  if (built.dropped > 0) {
    options.onWarning?.(`${describeSplit(record)}: ${built.dropped} of ${examples.length} conversations dropped: truncated to ${options.seqLen} tokens they kept no assistant token, the only ones the loss counts (raise ${raise} to keep them)`);
  }
  if (built.truncated > 0) {
    options.onWarning?.(
      `${describeSplit(record)}: ${built.truncated} of ${examples.length} conversations lost assistant tokens to truncation at ${options.seqLen} tokens; ` +
        `${built.targetsLost} of ${built.targets} assistant tokens are cut off and count in no loss (raise ${raise} to keep them)`,
    );
  }
  warnFewer(options, built.sequences.length, describeSplit(record));
  const keep = sampleIndices(built.sequences.length, options.samples, options.seed);
  const lost = keep.map((i) => built.lost[i]!);
  return {
    seqLen: options.seqLen,
    sequences: keep.map((i) => built.sequences[i]!),
    lossMasks: keep.map((i) => built.lossMasks[i]!),
    lengths: keep.map((i) => built.lengths[i]!),
    targetsLost: lost,
    source: {
      ...record,
      sequences: keep.length,
      tokens: keep.reduce((sum, i) => sum + built.lengths[i]!, 0),
      dropped: built.dropped,
      ...truncationCounts(lost),
      wholeSplit: { sequences: built.sequences.length, tokens: built.lengths.reduce((a, b) => a + b, 0), truncated: built.truncated, targetsLost: built.targetsLost, targets: built.targets },
      chatTemplate: { source: renderer.isFallback ? 'tulu' : 'model', sha256: createHash('sha256').update(renderer.template).digest('hex') },
    },
  };
}

/** True when the template renders a one-message conversation the same with and without add_generation_prompt. */
function generationPromptIsEmpty(renderer: ChatRenderer): boolean {
  const probe = [{ role: 'user', content: 'x' }];
  try {
    return renderer.render(probe, true) === renderer.render(probe, false);
  } catch {
    return false; // a template that refuses this conversation says so on the real data
  }
}

async function packedSet(selection: Selection, tokenizer: ApexTokenizer, options: LoadSequencesOptions, record: RecordBase): Promise<SequenceSet> {
  // BOS only when the tokenizer puts one before a text (some tokenizers, e.g. Qwen2's, have none).
  const bosId = options.bosId ?? (tokenizer.bosId !== undefined && tokenizer.prefixIds.includes(tokenizer.bosId) ? tokenizer.bosId : undefined);
  const eosId = options.eosId ?? tokenizer.eosId;
  const cache = await TokenCache.open({ tokenizer, ...(options.onWarning ? { onWarning: options.onWarning } : {}) });
  const text = (d: DataDocument) => (d as TextDocument).text;
  const tokenized = (await tokenizeSelection(selection, (d) => ({ ids: tokenizer.encode(text(d), { addSpecialTokens: false }) }), (d) => text(d).length, cache, options, { modelDir: tokenizer.source })).map((t) => t.ids);
  const packed = packDocuments(tokenized, options.seqLen, bosId, eosId);
  const streamTokens = tokenized.reduce((s, t) => s + t.length, 0);
  requireSequences(packed.length, describeSplit(record), `${streamTokens} tokens is less than one sequence of ${options.seqLen}; lower ${options.seqLenName ?? '--seq-len'} or add data`);
  warnFewer(options, packed.length, describeSplit(record));
  const sequences = sampleIndices(packed.length, options.samples, options.seed).map((i) => packed[i]!);
  return { seqLen: options.seqLen, sequences, source: { ...record, sequences: sequences.length, tokens: sequences.length * options.seqLen } };
}
