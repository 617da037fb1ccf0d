// The webgpu pre-flight of a training stage: a weight or one micro-batch's activation over the
// device's largest storage binding is refused up front (exit 5, MEMORY_WEBGPU_BINDING) with the
// tensor, its shape and size, the limit and what to change; sizes are float32 element counts × 4.
import { describe, expect, it } from 'vitest';
import { ExitCode, ResourceLimitError } from '../../src/errors.js';
import { planForward } from '../../src/model/memory-estimate.js';
import { checkWebgpuBinding, largestActivations, largestWeights } from '../../src/model/webgpu-binding-limit.js';
import { llama2_7b, stories260K } from '../train/model-specs.js';

const LAVAPIPE = 134_217_728; // Mesa lavapipe's maxStorageBufferBindingSize (128 MiB)

function refusal(f: () => void): ResourceLimitError {
  try {
    f();
  } catch (e) {
    return e as ResourceLimitError;
  }
  throw new Error('expected a refusal');
}

describe('checkWebgpuBinding', () => {
  it('passes what fits: stories260K at 8 × 512', () => {
    expect(() => checkWebgpuBinding(stories260K, 8, 512, LAVAPIPE, 'training')).not.toThrow();
  });

  it('refuses attention scores over the limit, naming shape, size and the flags to change', () => {
    // 4 × 8 heads × 1100² × 4 bytes = 154,880,000 > 128 MiB (the size Dawn reported when it dropped the command).
    const e = refusal(() => checkWebgpuBinding(stories260K, 4, 1100, LAVAPIPE, 'training stage 1'));
    expect(e).toBeInstanceOf(ResourceLimitError);
    expect(e.exit).toBe(ExitCode.resource);
    expect(e.code).toBe('MEMORY_WEBGPU_BINDING');
    expect(e.message).toMatch(/^training stage 1 on webgpu: the attention scores, \[4, 8, 1100, 1100\] float32 \(155 MB\), exceed this GPU's largest storage binding \(134 MB, maxStorageBufferBindingSize\); lower --batch-size or --seq-len/);
    expect(() => checkWebgpuBinding(stories260K, 4, 1024, LAVAPIPE, 'training')).not.toThrow(); // exactly 128 MiB
  });

  it('refuses a weight over the limit before the activations, pointing to another backend', () => {
    // LLaMA-2-7B's embeddings: 32,000 × 4,096 × 4 bytes = 524 MB.
    const e = refusal(() => checkWebgpuBinding(llama2_7b, 1, 16, 2 ** 28, 'training'));
    expect(e.code).toBe('MEMORY_WEBGPU_BINDING');
    expect(e.message).toMatch(/the embeddings \(model\.embed_tokens\.weight\), \[32000, 4096\] as float32 \(524 MB\), exceeds .*--backend tensorflow, wasm or cpu/);
    expect(() => checkWebgpuBinding(llama2_7b, 1, 16, 2 ** 31, 'training')).not.toThrow();
  });

  it('sizes every tensor as 4 bytes per element', () => {
    for (const t of [...largestWeights(llama2_7b), ...largestActivations(llama2_7b, 2, 64)]) expect(t.bytes).toBe(4 * t.shape.reduce((a, b) => a * b, 1));
    expect(largestWeights(stories260K).map((t) => t.what)).not.toContain('lm_head.weight'); // tied
    expect(largestWeights(llama2_7b).map((t) => t.what)).toContain('lm_head.weight');
  });
});

describe('planForward within a storage binding (analyze, eval on webgpu)', () => {
  const GiB = 2 ** 30;
  it('plans chunks whose attention scores and logits blocks fit the binding', () => {
    // One 1100-token sequence's scores: 8 × 1100² × 4 = 38.7 MB; three fit 128 MiB, four do not.
    expect(planForward(stories260K, 16, 1100, 64 * GiB, 16).chunkSequences).toBe(16);
    const plan = planForward(stories260K, 16, 1100, 64 * GiB, 16, Infinity, LAVAPIPE);
    expect(plan.chunkSequences).toBe(3);
    expect(4 * plan.vocabBlockRows * plan.chunkSequences * 1100).toBeLessThanOrEqual(LAVAPIPE);
    // Without a binding the plan is unchanged.
    expect(planForward(stories260K, 16, 128, 64 * GiB, 16, Infinity, Infinity)).toEqual(planForward(stories260K, 16, 128, 64 * GiB, 16));
  });

  it('refuses a sequence whose own scores exceed the binding (exit 5)', () => {
    // 8 × 2100² × 4 = 141 MB.
    const e = refusal(() => planForward(stories260K, 1, 2100, 64 * GiB, 1, Infinity, LAVAPIPE));
    expect(e.code).toBe('MEMORY_WEBGPU_BINDING');
    expect(e.message).toMatch(/^a forward pass of one 2100-token sequence on webgpu: the attention scores, \[1, 8, 2100, 2100\].*use shorter sequences/);
  });
});
