/**
 * The analysis-level arithmetic on a hand-computed case: per-sequence sums of squares summed
 * into micro-batches (boundaries, a partial last micro-batch), KV-group norms, Top-k / Min-k
 * counts summed over micro-batches with ties inside a micro-batch, per-layer k, and the
 * selection with each switch. Every expected number below is worked out in the comments.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tokenizeChat, type ChatMessage } from '../../src/model/chat-template.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { loadSequences } from '../../src/train/data.js';
import { describe, expect, it } from 'vitest';
import { UsageError, VerificationError } from '../../src/errors.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { LayerStatsCollector, microBatchCount } from '../../src/pipeline/activation-stats.js';
import { checkMemoryLimit, describeMemoryEstimate, estimateAnalysisMemory } from '../../src/pipeline/analysis-memory.js';
import { formatBytes } from '../../src/io/byte-size.js';
import { analysisRecorder, checkSelectionSettings, countingK, DEFAULT_SELECTION, selectFromRecorder, type SelectionSettings } from '../../src/pipeline/analysis-selection.js';
import { formatAnalysisJson, unpadded } from '../../src/pipeline/analyze.js';
import { Rng } from '../../src/util/rng.js';

/** 2 layers, 4 query heads in 2 KV groups (GQA), head_dim 2, 4 FFN channels. */
const spec: ModelSpec = {
  architecture: 'LlamaForCausalLM', numLayers: 2, hiddenSize: 8, numHeads: 4, numKvHeads: 2, headDim: 2, intermediateSize: 4, vocabSize: 16,
  tieWordEmbeddings: true, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' }, qkvBias: false, oBias: false, mlpBias: false,
  maxPositionEmbeddings: 64, eosTokenIds: [],
};
const settings: SelectionSettings = { ...DEFAULT_SELECTION, seed: 7 };

// Five sequences in micro-batches of two: {0, 1}, {2, 3}, {4}.
// Layer 0, per sequence: head sums of squares [h0..h3] and channel sums of squares [c0..c3].
const L0_HEADS = [[1, 0, 0, 0], [0, 0, 4, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 9, 16]];
const L0_CHANNELS = [[4, 1, 0, 0], [0, 1, 9, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 25, 0, 400]];
// Layer 1: group 0 and channel 3 always strongest, group 1 and channel 0 always weakest.
const L1_HEADS = [9, 9, 1, 1];
const L1_CHANNELS = [1, 2, 3, 4];

function collect(order: number[] = [0, 1, 2, 3, 4]) {
  const recorder = analysisRecorder(spec, settings);
  const collector = new LayerStatsCollector(spec, 5, 2, { keepPerSequence: true });
  for (const s of order) collector.addSequence(0, s, L0_HEADS[s]!, L0_CHANNELS[s]!);
  collector.finishLayer(recorder);
  for (const s of order) collector.addSequence(1, s, L1_HEADS.map((v) => v * (s + 1)), L1_CHANNELS.map((v) => v * (s + 1)));
  collector.finishLayer(recorder);
  return { recorder, collector };
}

describe('micro-batch aggregation', () => {
  it('uses k = 1 for 2 KV groups and 4 channels (min-one-pair: floor(n·0.375/2) = 0)', () => {
    expect(countingK(spec, settings)).toEqual({ headK: 1, channelK: 1 });
    expect(microBatchCount(5, 2)).toBe(3);
  });

  it('sums sequences into micro-batches before ranking, with ties broken by index', () => {
    const { recorder } = collect();
    expect(recorder.microBatches(0)).toBe(3);
    // Heads, layer 0. Micro-batch {0,1}: sums [1,0,4,0] → groups (h0+h1, h2+h3) = (1, 4), norms (1, 2): g1 +1, g0 −1.
    // (Per sequence, sequence 0 alone would have favoured g0.) Micro-batch {2,3}: [1,1,1,1] → norms (√2, √2), a tie:
    // Top-1 = g0 and Min-1 = g0 (lower index first for both), so g0 gets +1 − 1 and g1 nothing. Micro-batch {4}:
    // groups (0, 25) → g1 +1, g0 −1. Scores: g0 = −1 + 0 − 1 = −2, g1 = +2.
    expect(Array.from(recorder.headScores(0))).toEqual([-2, 2]);
    // Channels, layer 0. {0,1}: [4,2,9,0] → norms (2, √2, 3, 0): c2 +1, c3 −1. {2,3}: all 1, tie: c0 +1 −1.
    // {4}: norms (0, 5, 0, 20): c3 +1; Min-1 among c0 = c2 = 0 is c0 → c0 −1. Scores (−1, 0, +1, 0).
    expect(Array.from(recorder.channelScores(0))).toEqual([-1, 0, 1, 0]);
    // Layer 1 is counted on its own: every micro-batch ranks g0 over g1 and c3 over c0.
    expect(Array.from(recorder.headScores(1))).toEqual([3, -3]);
    expect(Array.from(recorder.channelScores(1))).toEqual([-3, 0, 0, 3]);
  });

  it('averages the norms over micro-batches (KV groups, query heads and channels)', () => {
    const { recorder } = collect();
    const close = (got: ArrayLike<number>, want: number[]) => want.forEach((w, i) => expect(got[i]).toBeCloseTo(w, 12));
    close(recorder.headUnitNormAvg(0), [(1 + Math.SQRT2 + 0) / 3, (2 + Math.SQRT2 + 5) / 3]);
    // Query heads: micro-batch sums [1,0,4,0], [1,1,1,1], [0,0,9,16] → norms averaged per head.
    close(recorder.headNormAvg(0), [(1 + 1 + 0) / 3, (0 + 1 + 0) / 3, (2 + 1 + 3) / 3, (0 + 1 + 4) / 3]);
    close(recorder.channelNormAvg(0), [(2 + 1 + 0) / 3, (Math.SQRT2 + 1 + 5) / 3, (3 + 1 + 0) / 3, (0 + 1 + 20) / 3]);
  });

  it('does not depend on the order in which sequences arrive within a layer', () => {
    const a = collect().recorder.state();
    const b = collect([4, 2, 0, 3, 1]).recorder.state();
    expect(b).toEqual(a);
  });

  it('keeps per-sequence statistics in the reference layout [L, B, H] / [L, B, I]', () => {
    const dump = collect().collector.dump!;
    expect(dump.headSumsq.length).toBe(2 * 5 * 4);
    expect(Array.from(dump.headSumsq.subarray((0 * 5 + 4) * 4, (0 * 5 + 5) * 4))).toEqual([0, 0, 9, 16]);
    expect(Array.from(dump.gateSumsq.subarray((1 * 5 + 2) * 4, (1 * 5 + 3) * 4))).toEqual([3, 6, 9, 12]);
  });

  it('refuses non-finite activations, naming layer and kind', () => {
    const collector = new LayerStatsCollector(spec, 2, 2);
    expect(() => collector.addSequence(0, 1, [1, NaN, 0, 0], [1, 1, 1, 1])).toThrow(VerificationError);
    expect(() => collector.addSequence(0, 1, [1, NaN, 0, 0], [1, 1, 1, 1])).toThrow(/layer 0: attention output .* NaN .*query head 1/);
    expect(() => collector.addSequence(0, 0, [1, 1, 1, 1], [1, Infinity, 1, 1])).toThrow(/layer 0: FFN gate activation .* infinite .*channel 1/);
  });

  it('refuses a layer with a sequence missing', () => {
    const recorder = analysisRecorder(spec, settings);
    const collector = new LayerStatsCollector(spec, 3, 2);
    collector.addSequence(0, 0, [1, 1, 1, 1], [1, 1, 1, 1]);
    collector.addSequence(0, 2, [1, 1, 1, 1], [1, 1, 1, 1]);
    expect(() => collector.finishLayer(recorder)).toThrow(/sequence 1/);
  });
});

describe('selection from the recorded scores', () => {
  const list = (a: Int32Array) => Array.from(a);

  it('picks P by score (ties by index) and N among the rest', () => {
    const { selections } = selectFromRecorder(collect().recorder, settings);
    // Layer 0 channels (−1, 0, +1, 0): P = c2, N = c0. Heads (−2, +2): P = g1, N = g0.
    expect(list(selections[0]!.channels.P)).toEqual([2]);
    expect(list(selections[0]!.channels.N)).toEqual([0]);
    expect(list(selections[0]!.heads.P)).toEqual([1]);
    expect(list(selections[0]!.heads.N)).toEqual([0]);
    expect(list(selections[1]!.heads.P)).toEqual([0]);
    expect(list(selections[1]!.channels.P)).toEqual([3]);
    expect(selections.map((s) => [s.headK, s.channelK])).toEqual([[1, 1], [1, 1]]);
  });

  it('--score avg selects by averaged norms instead', () => {
    const { selections } = selectFromRecorder(collect().recorder, { ...settings, score: 'avg' });
    // Channel norm averages layer 0: (1, 2.47, 1.33, 7): P = c3 (the rank count had c2), N = c0.
    expect(list(selections[0]!.channels.P)).toEqual([3]);
    expect(list(selections[0]!.channels.N)).toEqual([0]);
  });

  it('--reverse swaps P and N', () => {
    const { selections } = selectFromRecorder(collect().recorder, { ...settings, reverse: true });
    expect(list(selections[0]!.channels.P)).toEqual([0]);
    expect(list(selections[0]!.channels.N)).toEqual([2]);
    expect(list(selections[0]!.heads.P)).toEqual([0]);
    expect(list(selections[0]!.heads.N)).toEqual([1]);
  });

  it('--random-selection shuffles the scores with Rng(seed), layer by layer, heads before channels', () => {
    const { recorder } = collect();
    const { selections } = selectFromRecorder(recorder, { ...settings, randomSelection: true });
    const rng = new Rng(settings.seed);
    for (let layer = 0; layer < 2; layer++) {
      for (const [kind, scores] of [['heads', recorder.headScores(layer)], ['channels', recorder.channelScores(layer)]] as const) {
        const shuffled = rng.shuffle(Array.from(scores));
        const order = shuffled.map((_, i) => i);
        const P = [...order].sort((a, b) => shuffled[b]! - shuffled[a]! || a - b)[0]!;
        const N = order.filter((u) => u !== P).sort((a, b) => shuffled[a]! - shuffled[b]! || a - b)[0]!;
        expect(list(selections[layer]![kind].P)).toEqual([P]);
        expect(list(selections[layer]![kind].N)).toEqual([N]);
      }
    }
  });

  it('--decay-k halves k per stage (100 channels: 18, 9, 4), keeping one pair at least', () => {
    const wide = { ...spec, intermediateSize: 100, numKvHeads: 4 };
    expect(countingK(wide, settings)).toEqual({ headK: 1, channelK: 18 });
    expect(countingK(wide, { ...settings, decayK: true, stage: 1 })).toEqual({ headK: 1, channelK: 18 });
    expect(countingK(wide, { ...settings, decayK: true, stage: 2 })).toEqual({ headK: 1, channelK: 9 });
    expect(countingK(wide, { ...settings, decayK: true, stage: 3 })).toEqual({ headK: 1, channelK: 4 });
  });

  it('refuses settings that make no sense', () => {
    expect(() => checkSelectionSettings({ ...settings, ratio: 0 })).toThrow(UsageError);
    expect(() => checkSelectionSettings({ ...settings, stage: 2 })).toThrow(/--decay-k/);
    expect(() => checkSelectionSettings({ ...settings, stage: 0, decayK: true })).toThrow(UsageError);
  });
});

describe('helpers', () => {
  it('cuts chat sequences after their last target token and leaves packed text alone', () => {
    const sequences = [Int32Array.from([1, 5, 6, 7, 0, 0]), Int32Array.from([1, 2, 3, 4, 5, 6])];
    const lossMasks = [Uint8Array.from([0, 0, 1, 1, 0, 0]), Uint8Array.from([0, 1, 1, 1, 1, 1])];
    const source = { kind: 'jsonl-chat', paths: [], sha256: [], seqLen: 6, seed: 0, split: 'all', heldoutFraction: 0.05, splitSeed: 0, documents: 2, sequences: 2, tokens: 10 } as const;
    expect(unpadded({ seqLen: 6, sequences, lossMasks, source }).map((s) => Array.from(s))).toEqual([[1, 5, 6, 7], [1, 2, 3, 4, 5, 6]]);
    expect(unpadded({ seqLen: 6, sequences, source: { ...source, kind: 'text' } })).toBe(sequences);
    // With the conversations' lengths, a trailing non-assistant turn is kept (only padding goes).
    expect(unpadded({ seqLen: 6, sequences, lossMasks, lengths: [5, 6], source }).map((s) => Array.from(s))).toEqual([[1, 5, 6, 7, 0], [1, 2, 3, 4, 5, 6]]);
  });

  it('analyze on chat data counts every real token, a conversation ending with a user turn included', async () => {
    const tok = (await loadTokenizer('fixtures/llama-mha-f32'))!;
    const dir = mkdtempSync(join(tmpdir(), 'apex-chat-tail-'));
    const file = join(dir, 'chat.jsonl');
    const conversations = [
      [{ role: 'user', content: 'Where is the ship?' }, { role: 'assistant', content: 'At sea.' }, { role: 'user', content: 'And the whale, where is the whale now?' }],
      [{ role: 'user', content: 'Hello' }, { role: 'assistant', content: 'Hi there.' }],
    ];
    writeFileSync(file, conversations.map((messages) => JSON.stringify({ messages })).join('\n'));
    const data = await loadSequences({ data: [file], tokenizer: tok, seqLen: 64, seed: 0 });
    const real = conversations.map((messages) => tokenizeChat(tok, messages as ChatMessage[]).ids.length);
    expect(data.lengths).toEqual(real);
    expect(unpadded(data).map((s) => s.length)).toEqual(real);
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes JSON with number arrays on one line, and it parses back to the same value', () => {
    const value = { a: [1, -2.5, 3e-7], b: { c: [] as number[], d: ['x', 'y'] }, e: 4 };
    const text = formatAnalysisJson(value);
    expect(text).toContain('"a": [1, -2.5, 3e-7]');
    expect(JSON.parse(text)).toEqual(value);
  });

  it('estimates memory from the forward plan plus the statistics, and enforces --max-memory', () => {
    const e = estimateAnalysisMemory(spec, { sequences: 5, seqLen: 8, batchSize: 2, budgetBytes: 2 ** 30, dumpStats: true, erank: false, base: false });
    expect(e.dumpBytes).toBe(2 * 5 * (4 + 4) * 4);
    expect(e.totalBytes).toBe(e.forward.estimate.totalBytes + e.statisticsBytes + e.dumpBytes);
    expect(() => checkMemoryLimit(e, e.totalBytes - 1)).toThrow(/--max-memory/);
    expect(() => checkMemoryLimit(e, e.totalBytes)).not.toThrow();
  });

  it('words the estimate as parts that add up to its total (the command\'s own runtime included)', () => {
    const e = estimateAnalysisMemory(spec, { sequences: 5, seqLen: 8, batchSize: 2, budgetBytes: 2 ** 30, dumpStats: true, erank: false, base: false });
    const line = describeMemoryEstimate(e);
    const f = e.forward.estimate;
    const parts = [f.layerBytes, f.activationBytes, f.hiddenStateBytes, f.embeddingBytes, f.lmHeadBytes, e.statisticsBytes, f.commandBytes, e.dumpBytes];
    expect(parts.reduce((a, b) => a + b, 0)).toBe(e.totalBytes);
    for (const bytes of parts) expect(line).toContain(formatBytes(bytes));
    expect(line).toMatch(/the command itself /);
  });
});
