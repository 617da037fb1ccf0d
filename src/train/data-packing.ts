/**
 * Turning token ids into fixed-length training sequences.
 *
 * Text is packed: documents are joined into one stream with EOS between them and the stream is
 * cut into consecutive chunks of seqLen − 1 tokens, each sequence being BOS + chunk (seqLen
 * tokens; without a BOS id the chunks are seqLen long). Attention may cross a document boundary
 * inside a sequence. The incomplete tail of the stream is dropped.
 *
 * Chat is not packed: one conversation per sequence, truncated to seqLen, padded at the end;
 * the loss mask is 1 on assistant tokens and 0 on the prompt, the padding and position 0.
 */
import { InputError } from '../errors.js';

/** Packs tokenized documents (no special tokens) into sequences of exactly seqLen tokens. */
export function packDocuments(documents: readonly ArrayLike<number>[], seqLen: number, bosId: number | undefined, eosId: number | undefined): Int32Array[] {
  const separator = eosId === undefined ? 0 : 1;
  let total = 0;
  documents.forEach((d, i) => (total += d.length + (i > 0 ? separator : 0)));
  const stream = new Int32Array(total);
  let at = 0;
  documents.forEach((d, i) => {
    if (i > 0 && eosId !== undefined) stream[at++] = eosId;
    stream.set(d, at);
    at += d.length;
  });
  const body = bosId === undefined ? seqLen : seqLen - 1;
  const count = Math.floor(total / body);
  const sequences: Int32Array[] = [];
  for (let k = 0; k < count; k++) {
    const seq = new Int32Array(seqLen);
    const offset = bosId === undefined ? 0 : 1;
    if (bosId !== undefined) seq[0] = bosId;
    seq.set(stream.subarray(k * body, (k + 1) * body), offset);
    sequences.push(seq);
  }
  return sequences;
}

export interface MaskedSequences {
  sequences: Int32Array[];
  lossMasks: Uint8Array[];
  /** Conversations dropped because truncation left no assistant token to learn. */
  dropped: number;
  /** Tokens of each kept sequence before padding. */
  lengths: number[];
  /** Kept conversations that lost some assistant tokens to truncation. */
  truncated: number;
  /** Assistant tokens truncation removed from each kept sequence's conversation (parallel to `sequences`). */
  lost: number[];
  /** Assistant tokens (loss targets) of all conversations, and those truncation removed. */
  targets: number;
  targetsLost: number;
}

/** One sequence per conversation: truncate to seqLen, pad with padId; mask = assistant tokens at t ≥ 1. */
export function chatSequences(examples: readonly { ids: ArrayLike<number>; assistantMask: Uint8Array }[], seqLen: number, padId: number): MaskedSequences {
  const sequences: Int32Array[] = [];
  const lossMasks: Uint8Array[] = [];
  let dropped = 0;
  const lengths: number[] = [];
  const lostPerSequence: number[] = [];
  let truncated = 0;
  let allTargets = 0;
  let targetsLost = 0;
  for (const ex of examples) {
    const n = Math.min(seqLen, ex.ids.length);
    let lost = 0;
    for (let t = Math.max(1, n); t < ex.ids.length; t++) lost += ex.assistantMask[t] === 1 ? 1 : 0;
    const seq = new Int32Array(seqLen).fill(padId);
    const mask = new Uint8Array(seqLen);
    let targets = 0;
    for (let t = 0; t < n; t++) {
      seq[t] = ex.ids[t]!;
      if (t >= 1 && ex.assistantMask[t] === 1) {
        mask[t] = 1;
        targets++;
      }
    }
    allTargets += targets + lost;
    targetsLost += lost;
    if (targets === 0) {
      dropped++;
      continue;
    }
    if (lost > 0) truncated++;
    sequences.push(seq);
    lossMasks.push(mask);
    lengths.push(n);
    lostPerSequence.push(lost);
  }
  return { sequences, lossMasks, dropped, lengths, truncated, lost: lostPerSequence, targets: allTargets, targetsLost };
}

/** Fails clearly when the data is too small for even one sequence. */
export function requireSequences(count: number, what: string, detail: string): void {
  if (count === 0) throw new InputError(`${what} gives no sequences: ${detail}`, 'NOT_ENOUGH_DATA');
}
