// estimateForwardMemory against hand-computed bytes for a tiny GQA model (what each term
// counts is documented in src/model/memory-estimate.ts and docs/reliability.md).
import { describe, expect, it } from 'vitest';
import { COMMAND_BYTES, estimateForwardMemory } from '../../src/model/memory-estimate.js';
import type { ModelSpec } from '../../src/model/model-spec.js';

/** 2 layers, hidden 8, 4 query heads / 2 KV heads of 2, FFN 4, vocabulary 16, tied. */
const spec: ModelSpec = {
  architecture: 'LlamaForCausalLM', numLayers: 2, hiddenSize: 8, numHeads: 4, numKvHeads: 2, headDim: 2, intermediateSize: 4, vocabSize: 16,
  tieWordEmbeddings: true, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' }, qkvBias: false, oBias: false, mlpBias: false,
  maxPositionEmbeddings: 64, eosTokenIds: [],
};

describe('estimateForwardMemory', () => {
  it('counts each term as documented (chunk of 2 × 8 tokens, 5 sequences, whole vocabulary)', () => {
    const e = estimateForwardMemory(spec, 2, 8, { totalSequences: 5, vocabBlockRows: 16 });
    // Layer: q 64 + k 32 + v 32 + o 64 + gate/up/down 3·32 + norms 2·8 = 304 floats; largest 64 decoded twice.
    expect(e.layerBytes).toBe(4 * 304 + 4 * 2 * 64);
    // 16 tokens × (18·8 + 11·8 + 11·4 + 8·4 = 308) + 4 score copies × 2·4·8·8.
    expect(e.activationBytes).toBe(4 * (16 * 308 + 4 * 2 * 4 * 64));
    expect(e.hiddenStateBytes).toBe(4 * 2 * 5 * 8 * 8);
    // Table 16·8 floats (small: read whole) + min(table, 5·8 rows).
    expect(e.embeddingBytes).toBe(512 + 512);
    // Block 16·8, logits and 3 temporaries 4·16·16, hidden and its transpose 2·16·8; decoded block 2·16·8.
    expect(e.lmHeadBytes).toBe(4 * (128 + 1024 + 256) + 4 * 256);
    expect(e.commandBytes).toBe(20 * 2 ** 20);
    expect(e.tfHeapBytes).toBe(4 * 304 + e.activationBytes + 4 * (128 + 1024 + 256));
    expect(e.totalBytes).toBe(1728 + 27904 + 2560 + 1024 + 6656 + COMMAND_BYTES);
  });
});
