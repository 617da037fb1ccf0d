// How apex generate batches its prompts: by length, split where the memory of a batch does not fit.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseModelConfig } from '../../src/model/config.js';
import { estimateForwardMemory } from '../../src/model/memory-estimate.js';
import { generationWorkBytes, planGeneration, promptGroups, residentGenerationBytes } from '../../src/model/generation-source.js';
import { WASM_HEAP_USABLE_BYTES } from '../../src/model/wasm-heap-limit.js';

const stories = parseModelConfig(JSON.parse(readFileSync('fixtures/stories260K/config.json', 'utf8')), 'config.json');
/** A LLaMA-7B shape: 27 GB of float32 weights, 0.5 MB of key/value cache per position. */
const big = parseModelConfig(
  { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000, max_position_embeddings: 4096, rms_norm_eps: 1e-5, tie_word_embeddings: false },
  'config.json',
);
const lengths = (n: number[]) => n.map((length) => new Int32Array(length));
const weightsOf = (spec: typeof stories) => residentGenerationBytes(spec, 1, 1, 1) - generationWorkBytes(spec, 1, 1, 1);

describe('planGeneration', () => {
  it('runs one batch per prompt length, in order of first appearance, when all fit', () => {
    const plan = planGeneration(stories, promptGroups(lengths([3, 6, 3])), 4, 2 ** 40, 'wasm');
    expect(plan).toMatchObject({ resident: true, rowsPerBatch: 2, batches: [{ length: 3, rows: [0, 2] }, { length: 6, rows: [1] }] });
  });

  it('splits a batch whose cache does not fit beside the resident weights into the largest batches that do', () => {
    const groups = promptGroups(lengths(Array.from({ length: 40 }, () => 200)));
    const need = (batch: number) => weightsOf(stories) + generationWorkBytes(stories, batch, 200, 264);
    // Hand-picked cap: a budget that holds exactly 9 rows' work.
    const plan = planGeneration(stories, groups, 64, need(9), 'cpu');
    expect(need(10)).toBeGreaterThan(need(9));
    expect(plan.resident).toBe(true);
    expect(plan.rowsPerBatch).toBe(9);
    expect(plan.batches.map((b) => b.rows.length)).toEqual([9, 9, 9, 9, 4]);
    expect(plan.batches.flatMap((b) => b.rows)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    // What the unsplit batch would need is what the budget note quotes.
    expect(plan.residentBytes).toBe(need(40));
  });

  it('streams the model when its weights and one prompt do not fit the budget; with no heap limit (cpu) nothing is split', () => {
    const groups = promptGroups(lengths([5, 5, 5]));
    const plan = planGeneration(stories, groups, 8, weightsOf(stories), 'cpu');
    expect(plan).toMatchObject({ resident: false, rowsPerBatch: 3, batches: [{ length: 5, rows: [0, 1, 2] }] });
  });

  it('on wasm, splits a streamed batch to the heap, and refuses a single sequence that cannot fit it', () => {
    const groups = promptGroups(lengths(Array.from({ length: 8 }, () => 16)));
    const streamed = (batch: number) => generationWorkBytes(big, batch, 16, 1024) + estimateForwardMemory(big, batch, 1).layerBytes;
    const plan = planGeneration(big, groups, 1008, 4 * 2 ** 30, 'wasm');
    expect(plan.resident).toBe(false);
    expect(plan.rowsPerBatch).toBeGreaterThanOrEqual(1);
    expect(plan.rowsPerBatch).toBeLessThan(8);
    expect(streamed(plan.rowsPerBatch)).toBeLessThanOrEqual(WASM_HEAP_USABLE_BYTES);
    expect(streamed(plan.rowsPerBatch + 1)).toBeGreaterThan(WASM_HEAP_USABLE_BYTES);
    expect(plan.batches.flatMap((b) => b.rows)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // The same batch on cpu (no heap limit) runs whole.
    expect(planGeneration(big, groups, 1008, 4 * 2 ** 30, 'cpu').rowsPerBatch).toBe(8);
    expect(() => planGeneration(big, promptGroups(lengths([16])), 4000, 4 * 2 ** 30, 'wasm')).toThrow(/generating one 4016-token sequence/);
  });
});
