/**
 * Tokenizing in worker threads (tokenize-worker.ts): the pieces of work (contiguous documents of
 * one file) go to a pool of workers, and their results come back to the caller one piece at a
 * time, in piece order, as they arrive (a piece that finished early waits for those before it).
 *
 * When: `APEX_TOKENIZE_THREADS=N` decides (1 = in the main thread; N ≥ 2 uses min(N, pieces)
 * workers whatever the size); unset, workers are used when there is at least about 4 s of
 * in-process work (PARALLEL_MIN_CHARS: 4 M characters of text at ≈ 1 MB/s, 1 M characters of chat
 * content at ≈ 0.35 MB/s), with min(cores − 1, pieces, 16) threads, and only when that gives at
 * least 2. A worker starts and loads the fixture's tokenizer.json in ≈ 65 ms (measured on a 2-core
 * AMD EPYC VM); a large vocabulary's tokenizer.json takes longer (not measured), well below the
 * seconds the threshold stands for.
 *
 * Ctrl-C: waiting on the workers leaves the event loop free, so an aborted `signal` stops the
 * wait at once; the workers are terminated and the signal's reason is thrown (as
 * yieldForSignals does). The workers are terminated whenever the call ends.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { UsageError } from '../errors.js';
import type { ChatMessage } from '../model/chat-template.js';
import type { TokenizeReply, TokenizeRequest, TokenizeWorkerData } from './tokenize-worker.js';

/** Characters to tokenize (text; chat: message content) below which workers do not pay for their start-up. */
export const PARALLEL_MIN_CHARS = { text: 4_000_000, chat: 1_000_000 } as const;
/** Most worker threads used without APEX_TOKENIZE_THREADS. */
const MAX_THREADS = 16;
/** Bounds of a piece's characters: big enough to amortize a message, small enough to spread a file over the threads. */
const PIECE_MIN_CHARS = 1 << 16;
const PIECE_MAX_CHARS = 1 << 20;

/** Pieces tokenized by workers in this process, and worker threads started (an observable for tests and diagnostics). */
export const workerStats = { pieces: 0, threads: 0 };

/** APEX_TOKENIZE_THREADS as a number, or undefined when unset. */
export function tokenizeThreadsSetting(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.APEX_TOKENIZE_THREADS?.trim();
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`APEX_TOKENIZE_THREADS must be a whole number ≥ 1 (1 tokenizes in the main thread), not ${JSON.stringify(raw)}`, 'BAD_ENV');
  return n;
}

/** Most threads worth using for `chars` characters of text or chat: 1 = tokenize in process. */
export function tokenizeThreadCap(chars: number, kind: 'text' | 'chat', env: NodeJS.ProcessEnv = process.env): number {
  const setting = tokenizeThreadsSetting(env);
  if (setting !== undefined) return setting;
  if (chars < PARALLEL_MIN_CHARS[kind]) return 1;
  return Math.max(1, Math.min(availableParallelism() - 1, MAX_THREADS));
}

/** Characters per piece for `chars` characters spread over `threads` threads (about 4 pieces a thread, within bounds). */
export function pieceChars(chars: number, threads: number): number {
  return Math.min(PIECE_MAX_CHARS, Math.max(PIECE_MIN_CHARS, Math.ceil(chars / (threads * 4))));
}

/** Whether a worker can load this tokenizer: it needs the model folder's tokenizer.json. */
export function workersCanLoad(modelDir: string): boolean {
  return existsSync(join(modelDir, 'tokenizer.json'));
}

/** The documents of one piece: texts, or chat conversations. */
export type PieceDocuments = { texts: string[] } | { chats: ChatMessage[][] };

export interface ParallelOptions {
  modelDir: string;
  chatTemplate?: string;
  threads: number;
  signal?: AbortSignal;
}

/** Starts a worker on this module's sibling, as it runs: compiled .js, or .ts under vitest/tsx (through tsx's loader). */
function startWorker(data: TokenizeWorkerData): Worker {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  const script = join(dirname(self), `tokenize-worker${ext}`);
  if (ext === '.ts') {
    // Node 20 does not take `--import tsx` in a worker's execArgv: register tsx inside the worker, then load the .ts.
    const code = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(pathToFileURL(script).href)}); })`;
    return new Worker(code, { eval: true, workerData: data });
  }
  return new Worker(script, { workerData: data });
}

/**
 * Tokenizes `pieces` in `options.threads` workers; `consume(i, reply)` is called for piece i in
 * order 0, 1, …, and awaited before the next. At most a few pieces per thread wait to be consumed.
 */
export async function tokenizeInWorkers(pieces: readonly PieceDocuments[], options: ParallelOptions, consume: (piece: number, reply: TokenizeReply) => Promise<void> | void): Promise<void> {
  options.signal?.throwIfAborted();
  const threads = Math.max(1, Math.min(options.threads, pieces.length));
  const ahead = threads * 4; // pieces sent or waiting beyond the one being consumed
  const workers: Worker[] = [];
  const idle: Worker[] = [];
  const replies = new Map<number, TokenizeReply>();
  let nextToSend = 0;
  let consumed = 0;
  let failure: { error: unknown } | undefined;
  let closing = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (error: unknown) => {
    failure ??= { error };
    notify();
  };
  const dispatch = () => {
    while (idle.length > 0 && nextToSend < pieces.length && nextToSend < consumed + ahead) {
      const piece = nextToSend++;
      const request: TokenizeRequest = { piece, ...pieces[piece]! };
      idle.pop()!.postMessage(request);
    }
  };
  options.signal?.addEventListener('abort', notify);
  try {
    const data: TokenizeWorkerData = { modelDir: options.modelDir, ...(options.chatTemplate !== undefined ? { chatTemplate: options.chatTemplate } : {}) };
    for (let t = 0; t < threads; t++) {
      const worker = startWorker(data);
      workers.push(worker);
      workerStats.threads++;
      worker.on('message', (reply: TokenizeReply) => {
        replies.set(reply.piece, reply);
        idle.push(worker);
        dispatch();
        notify();
      });
      worker.on('error', fail);
      worker.on('exit', (code) => {
        if (!closing) fail(new Error(`a tokenizer worker stopped (exit code ${code}) before the data was tokenized`));
      });
      idle.push(worker);
    }
    dispatch();
    for (; consumed < pieces.length; ) {
      for (;;) {
        options.signal?.throwIfAborted();
        if (failure) throw failure.error;
        if (replies.has(consumed)) break;
        await new Promise<void>((resolve) => (wake = resolve));
      }
      const reply = replies.get(consumed)!;
      replies.delete(consumed);
      workerStats.pieces++;
      await consume(consumed, reply);
      consumed++;
      dispatch();
    }
    options.signal?.throwIfAborted();
  } finally {
    closing = true;
    options.signal?.removeEventListener('abort', notify);
    await Promise.all(workers.map((w) => w.terminate().catch(() => 0)));
  }
}
