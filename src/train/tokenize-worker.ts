/**
 * A worker thread of parallel tokenization (tokenize-parallel.ts starts it). It loads the
 * tokenizer itself from the model folder and, for chat, renders with the template source the main
 * thread passes in (the model's or the Tulu fallback, so both threads render alike). It answers
 * each request, a batch of documents, with their ids (Int32Array) and for chat the assistant masks
 * (Uint8Array), transferring the buffers. A document that fails to tokenize gets empty arrays and
 * an entry in `failed`: the main thread decides whether that fails the load, and tokenizes it
 * again itself to throw the very error the in-process path throws.
 *
 * Documents are tokenized exactly as data.ts does in process: text with
 * `encode(text, { addSpecialTokens: false })`, chat with `tokenizeChat`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { chatRenderer, tokenizeChat, type ChatMessage, type ChatRenderer } from '../model/chat-template.js';
import { loadTokenizer } from '../model/tokenizer.js';

export interface TokenizeWorkerData {
  /** The model folder the main thread's tokenizer came from. */
  modelDir: string;
  /** Chat data: the template source the main thread renders with. */
  chatTemplate?: string;
}

export interface TokenizeRequest {
  piece: number;
  texts?: string[];
  chats?: ChatMessage[][];
}

export interface TokenizeFailure {
  /** Index of the document in the request. */
  index: number;
  name: string;
  code?: string;
  message: string;
}

export interface TokenizeReply {
  piece: number;
  ids: Int32Array[];
  /** Chat requests only. */
  masks?: Uint8Array[];
  failed: TokenizeFailure[];
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('tokenize-worker runs as a worker thread');
  const data = workerData as TokenizeWorkerData;
  const tokenizer = await loadTokenizer(data.modelDir);
  if (!tokenizer) throw new Error(`${data.modelDir}: no tokenizer.json for the tokenizer worker`);
  let renderer: ChatRenderer | undefined;
  const chatWith = (): ChatRenderer =>
    (renderer ??= chatRenderer({
      template: data.chatTemplate,
      bosToken: tokenizer.bosToken,
      eosToken: tokenizer.eosToken,
      specialTokens: tokenizer.specialTokens,
      ...(tokenizer.chatTemplateFile !== undefined && data.chatTemplate === tokenizer.chatTemplate ? { file: tokenizer.chatTemplateFile } : {}),
    }));

  port.on('message', (request: TokenizeRequest) => {
    const ids: Int32Array[] = [];
    const masks: Uint8Array[] = [];
    const failed: TokenizeFailure[] = [];
    const fail = (index: number, e: unknown) => {
      const err = e as { name?: unknown; code?: unknown; message?: unknown; constructor?: { name?: string } };
      failed.push({ index, name: err?.constructor?.name ?? String(err?.name ?? 'Error'), ...(typeof err?.code === 'string' ? { code: err.code } : {}), message: String(err?.message ?? e) });
    };
    if (request.chats !== undefined) {
      const r = chatWith();
      request.chats.forEach((messages, i) => {
        try {
          const t = tokenizeChat(tokenizer, messages, r);
          ids.push(Int32Array.from(t.ids));
          masks.push(t.assistantMask);
        } catch (e) {
          fail(i, e);
          ids.push(new Int32Array(0));
          masks.push(new Uint8Array(0));
        }
      });
    } else {
      (request.texts ?? []).forEach((text, i) => {
        try {
          ids.push(Int32Array.from(tokenizer.encode(text, { addSpecialTokens: false })));
        } catch (e) {
          fail(i, e);
          ids.push(new Int32Array(0));
        }
      });
    }
    const reply: TokenizeReply = { piece: request.piece, ids, ...(request.chats !== undefined ? { masks } : {}), failed };
    // Each array owns its buffer (Int32Array.from, Uint8Array.from in tokenizeChat): hand them over, not copies.
    const transfer = new Set<ArrayBuffer>();
    for (const a of [...ids, ...masks]) transfer.add(a.buffer as ArrayBuffer);
    port.postMessage(reply, [...transfer]);
  });
}

await main();
