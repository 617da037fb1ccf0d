// The training memory estimate (issue 8) on a tiny shape, every term computed by hand from the
// formulas of src/train/stage-memory.ts: D = 4, 2 query heads and 1 KV head of 2 (q = 4,
// kv = 2), I = 8, 1 layer, vocabulary 10, untied; micro-batch 1 × 2 tokens.
import { describe, expect, it } from 'vitest';
import { ResourceLimitError } from '../../src/errors.js';
import { parseModelConfig } from '../../src/model/config.js';
import { COMMAND_BYTES } from '../../src/model/memory-estimate.js';
import { checkWasmHeap } from '../../src/model/wasm-heap-limit.js';
import { checkTrainingMemory, CONFIG_MEMORY_ADVICE, estimateTrainingMemory, fixedTrainingBytes } from '../../src/train/stage-memory.js';
import { modelParamCount } from '../../src/train/trainable-params.js';

const config = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', hidden_size: 4, num_hidden_layers: 1,
  num_attention_heads: 2, num_key_value_heads: 1, head_dim: 2, intermediate_size: 8, vocab_size: 10, tie_word_embeddings: false,
  rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 64,
};
const spec = parseModelConfig(config, 'tiny');
const base = { batch: 1, seqLen: 2, trainableEntries: 100, largestTrainable: 40, operators: false, lora: false };

describe('estimateTrainingMemory', () => {
  it('counts weights, optimizer, activations, logits, heap slack and saved state (hand-computed)', () => {
    // embeddings + lm_head 2·10·4, final norm 4, layer: 2 norms 8 + q,o 2·16 + k,v 2·8 + gate,up,down 3·32
    expect(modelParamCount(spec)).toBe(236);
    const e = estimateTrainingMemory(spec, base);
    expect(e.weightBytes).toBe(4 * 236);
    expect(e.optimizerBytes).toBe(4 * (6 * 100 + 2 * 40));
    // per layer and token 39·4 + 20·4 + 19·2 + 15·8 + 12 + 7·H·T (7·2·2) = 434; outside the layers 12·D = 48
    expect(e.activationBytes).toBe(4 * 2 * (434 + 48));
    expect(e.logitBytes).toBe(4 * 6 * 2 * 10);
    expect(e.tfHeapBytes).toBe(Math.round(1.15 * (944 + 2720 + 3856 + 480)));
    // what a checkpoint or trained.safetensors holds at a time: one tensor and one moment (2 · 40)
    expect(e.savedStateBytes).toBe(4 * 2 * 40);
    expect(e.commandBytes).toBe(20 * 2 ** 20);
    expect(e.totalBytes).toBe(9200 + 320 + COMMAND_BYTES);
  });

  it('counts AdamW\'s moments and the update\'s gradient copies over the trained entries only (structured)', () => {
    // 100 entries in trainable tensors, 30 of them in trained rows/columns: 2 · 100 whole copies
    // (gradient, accumulated sum) + 4 · 30 (update's gradient, clipped copy, two moments) + 2 · 40.
    expect(estimateTrainingMemory(spec, { ...base, trainedEntries: 30 }).optimizerBytes).toBe(4 * (2 * 100 + 4 * 30 + 2 * 40));
    expect(estimateTrainingMemory(spec, { ...base, trainedEntries: 100 })).toEqual(estimateTrainingMemory(spec, base));
  });

  it('adds the operator-mixed weights (APEX) and the merged projections (LoRA) independently of the tokens', () => {
    // operators: 5.25 · L · D · (kv + q + 3·I) = 5.25 · 4 · 30 = 630 floats
    const ops = estimateTrainingMemory(spec, { ...base, operators: true });
    expect(ops.activationBytes).toBe(3856 + 4 * 630);
    expect(estimateTrainingMemory(spec, { ...base, batch: 2, operators: true }).activationBytes - estimateTrainingMemory(spec, { ...base, batch: 2 }).activationBytes).toBe(4 * 630);
    // LoRA: 5 copies of the projections 2·16 + 2·8 + 3·32 = 144
    expect(estimateTrainingMemory(spec, { ...base, lora: true }).activationBytes).toBe(3856 + 4 * 5 * 144);
  });

  it('sizes a larger held-out evaluation batch forward only, and the peak as the larger of training and evaluation', () => {
    const plain = estimateTrainingMemory(spec, base);
    expect(plain.sizedBy).toBe('training');
    // Up to the training batch the evaluation changes nothing.
    expect(estimateTrainingMemory(spec, { ...base, batch: 3, evalBatch: 2 })).toEqual(estimateTrainingMemory(spec, { ...base, batch: 3 }));
    expect(estimateTrainingMemory(spec, { ...base, evalBatch: 1 })).toEqual(plain);
    // Training at 1 × 2 tokens holds 2 · 482 floats of activations and 2 · 6·10 of logits: 4336 bytes.
    // The evaluation's forward holds, per token, every layer's intermediates: 1 layer ·
    // (18·4 + 11·4 + 11·2 + 8·8 + 4·H·T = 4·2·2) = 218, plus 2·D = 8: 226 floats; its logits
    // phase (5·V + D = 54) is smaller and comes after them, so it adds nothing.
    // Evaluation batch 2: 4 tokens · 226 · 4 bytes = 3616 < 4336, training still sets the peak.
    expect(estimateTrainingMemory(spec, { ...base, evalBatch: 2 })).toEqual(plain);
    // Evaluation batch 3: 6 tokens · 226 · 4 = 5424 bytes > 4336; no logits alive at that peak.
    const e = estimateTrainingMemory(spec, { ...base, evalBatch: 3 });
    expect(e.sizedBy).toBe('evaluation');
    expect([e.activationBytes, e.logitBytes]).toEqual([5424, 0]);
    expect([e.weightBytes, e.optimizerBytes, e.savedStateBytes]).toEqual([plain.weightBytes, plain.optimizerBytes, plain.savedStateBytes]);
    expect(e.tfHeapBytes).toBe(Math.round(1.15 * (944 + 2720 + 5424)));
    expect(e.totalBytes).toBe(Math.round(1.15 * (944 + 2720 + 5424)) + 320 + COMMAND_BYTES);
    // The training formula at 3 × 2 tokens (what was counted before) is 3 · 4336 bytes.
    expect(e.activationBytes + e.logitBytes).toBeLessThan(3 * (3856 + 480));
    // The operator-mixed weights stay resident during the evaluation: 4 · 630 bytes more.
    expect(estimateTrainingMemory(spec, { ...base, evalBatch: 3, operators: true }).activationBytes).toBe(5424 + 4 * 630);
    // A budget the training batch fits and the evaluation batch does not is refused, naming the evaluation batch.
    expect(() => checkTrainingMemory(plain, plain.totalBytes, 'stage')).not.toThrow();
    expect(() => checkTrainingMemory(e, plain.totalBytes, 'stage')).toThrow(/held-out evaluation activations .*the held-out evaluation \(its batch or its sequences larger than training's\) sets this peak: raise --max-memory, or lower --eval-batch-size/);
    expect(() => checkTrainingMemory(e, plain.totalBytes, 'stage', CONFIG_MEMORY_ADVICE)).toThrow(/sets this peak: raise max_memory, or lower eval\.batch_size/);
  });

  it('sizes the evaluation at its own sequence length (a held-out set longer than the training sequences)', () => {
    // Evaluation batch 1 × 8 tokens: per token 1 layer · (72 + 44 + 22 + 64 + 4·H·T = 4·2·8 = 64) + 8 = 274
    // floats, 8 tokens · 274 · 4 = 8768 bytes > training's 4336, although the batch is the training batch.
    const e = estimateTrainingMemory(spec, { ...base, evalBatch: 1, evalSeqLen: 8 });
    expect(e.sizedBy).toBe('evaluation');
    expect([e.activationBytes, e.logitBytes]).toEqual([8768, 0]);
    // At the training length (what it is sized at without evalSeqLen) training sets the peak again.
    expect(estimateTrainingMemory(spec, { ...base, evalBatch: 1, evalSeqLen: 2 })).toEqual(estimateTrainingMemory(spec, base));
  });

  it('counts an evaluation whose logits outweigh its layers by its logits phase', () => {
    // Vocabulary 1000: per token the logits and loss (5·V = 5000 floats) and the final hidden
    // state (D = 4) outweigh the layers (226). Training at 1 × 2 tokens: 2 · (482 + 6·1000) floats.
    const wide = parseModelConfig({ ...config, vocab_size: 1000 }, 'wide');
    const e = estimateTrainingMemory(wide, { ...base, evalBatch: 2 });
    expect(e.sizedBy).toBe('evaluation');
    expect([e.activationBytes, e.logitBytes]).toEqual([4 * 4 * 4, 4 * 4 * 5000]);
    expect(e.tfHeapBytes).toBe(Math.round(1.15 * (e.weightBytes + 2720 + 64 + 80000)));
    // Evaluation batch 1 (2 tokens · 5004 floats) stays below training's 2 · 6482.
    expect(estimateTrainingMemory(wide, { ...base, evalBatch: 1 }).sizedBy).toBe('training');
  });

  it('with activation recomputation counts every layer\'s input and its gradient, and one layer\'s intermediates', () => {
    // 4 layers: per token the tape keeps 4 · 434 floats; recomputing, 2·D per layer (its input and
    // the gradient of its output, 2 · 4 · 4 = 32) and one layer's 434; outside the layers 48 either way.
    const deep = parseModelConfig({ ...config, num_hidden_layers: 4 }, 'deep');
    const plain = estimateTrainingMemory(deep, base);
    const rec = estimateTrainingMemory(deep, { ...base, recompute: true });
    expect(plain.activationBytes).toBe(4 * 2 * (4 * 434 + 48));
    expect(rec.activationBytes).toBe(4 * 2 * (32 + 434 + 48));
    expect([rec.weightBytes, rec.optimizerBytes, rec.logitBytes, rec.savedStateBytes]).toEqual([plain.weightBytes, plain.optimizerBytes, plain.logitBytes, plain.savedStateBytes]);
    expect([plain.recompute, rec.recompute]).toEqual([false, true]);
    expect(plain.totalBytesWithRecompute).toBe(rec.totalBytes);
    expect(rec.totalBytesWithRecompute).toBe(rec.totalBytes);
    // One layer: nothing to save (its input and gradient come on top of its intermediates).
    expect(estimateTrainingMemory(spec, { ...base, recompute: true }).activationBytes).toBeGreaterThan(estimateTrainingMemory(spec, base).activationBytes);
    // The held-out evaluation also runs one layer's intermediates at a time: per token 4 · D (the
    // layers' outputs) + one layer's 218 + 2·D = 242 floats instead of 4 · 218 + 8 = 880; at 8
    // sequences it sets the peak either way.
    expect(estimateTrainingMemory(deep, { ...base, evalBatch: 8 }).activationBytes).toBe(4 * 16 * 880);
    const evalRec = estimateTrainingMemory(deep, { ...base, evalBatch: 8, recompute: true });
    expect([evalRec.sizedBy, evalRec.activationBytes]).toEqual(['evaluation', 4 * 16 * 242]);
    // Said in the parts, and advised where it makes the plan fit (not where it is on already, nor where it would not fit either).
    const refusal = (e: typeof plain, budget: number, advice?: string) => {
      try {
        checkTrainingMemory(e, budget, 'stage', advice);
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error('expected a refusal');
    };
    expect(refusal(rec, rec.totalBytes - 1)).toContain('activations 4.11 kB (recomputed: the layer inputs and one layer\'s), logits');
    expect(refusal(plain, rec.totalBytes)).toMatch(/; add --recompute-activations \(about [^)]*: each layer's activations are recomputed in the backward pass, about a third more time per step, the same results\); or raise --max-memory, or lower --batch-size/);
    expect(refusal(plain, rec.totalBytes, CONFIG_MEMORY_ADVICE)).toMatch(/; set optimizer\.recompute_activations: true \(about .*\); or raise max_memory, or lower optimizer\.batch_size/);
    expect(refusal(plain, rec.totalBytes - 1)).not.toMatch(/recompute/);
    expect(refusal(rec, rec.totalBytes - 1)).not.toMatch(/--recompute-activations/);
    // An evaluation-sized peak that recomputation brings under the budget: both remedies.
    const evalPlain = estimateTrainingMemory(deep, { ...base, evalBatch: 8 });
    expect(refusal(evalPlain, evalRec.totalBytes)).toMatch(/add --recompute-activations .*; or the held-out evaluation .* sets this peak: raise --max-memory, or lower --eval-batch-size/);
  });

  it('refuses a budget below the total with what it is made of', () => {
    const e = estimateTrainingMemory(spec, base);
    expect(() => checkTrainingMemory(e, e.totalBytes, 'stage')).not.toThrow();
    expect(() => checkTrainingMemory(e, e.totalBytes - 1, 'stage')).toThrow(ResourceLimitError);
    expect(() => checkTrainingMemory(e, e.totalBytes - 1, 'stage')).toThrow(/stage needs about .*weights .*activations .*logits .*, allocation slack .*, copies while saving .*, the command itself 21\.0 MB\).*--batch-size/);
    expect(() => checkTrainingMemory(e, e.totalBytes - 1, 'stage')).not.toThrow(/wasm/);
  });

  it('does not suggest a smaller batch when the weights and optimizer state alone are over the budget', () => {
    const e = estimateTrainingMemory(spec, base);
    // 1.15 · (944 + 2720) + 320 + 20 MiB = 20,976,054 bytes that no batch or sequence length changes
    expect(fixedTrainingBytes(e)).toBe(Math.round(1.15 * (944 + 2720)) + 320 + COMMAND_BYTES);
    const refusal = (budget: number, advice?: string, training: { method: string; setting: string | null } = { method: 'apex', setting: 'full' }) => {
      try {
        checkTrainingMemory(e, budget, 'stage', advice, training);
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error('expected a refusal');
    };
    expect(refusal(fixedTrainingBytes(e))).toMatch(/; raise --max-memory, or lower --batch-size \/ --seq-len/);
    expect(refusal(fixedTrainingBytes(e) - 1)).toMatch(/; the weights, gradients and optimizer state alone \(with their slack, the copies while saving and the command itself\) need about 21\.0 MB, which a smaller batch or sequence length does not change: raise --max-memory, or train fewer tensors \(--setting structured or operators, or --method lora\)$/);
    expect(refusal(fixedTrainingBytes(e) - 1, CONFIG_MEMORY_ADVICE)).toMatch(/does not change: raise max_memory, or train fewer tensors \(setting: structured or operators, or method: lora\)$/);
    // Only what the method and setting allow: vanilla is told to switch method; structured to
    // operators or LoRA; operators and LoRA, which train nothing more to drop, only the budget.
    expect(refusal(fixedTrainingBytes(e) - 1, undefined, { method: 'vanilla', setting: null })).toMatch(/raise --max-memory, or train fewer tensors \(--method apex --setting structured or operators, or --method lora\)$/);
    expect(refusal(fixedTrainingBytes(e) - 1, CONFIG_MEMORY_ADVICE, { method: 'vanilla', setting: null })).toMatch(/\(method: apex with setting: structured or operators, or method: lora\)$/);
    expect(refusal(fixedTrainingBytes(e) - 1, undefined, { method: 'apex', setting: 'structured' })).toMatch(/\(--setting operators, or --method lora\)$/);
    expect(refusal(fixedTrainingBytes(e) - 1, undefined, { method: 'apex', setting: 'operators' })).toMatch(/does not change: raise --max-memory$/);
    expect(refusal(fixedTrainingBytes(e) - 1, undefined, { method: 'lora', setting: null })).toMatch(/does not change: raise --max-memory$/);
    // Frozen weights alone over the budget (1.15 · 944 bytes): fewer trained tensors cannot help.
    expect(refusal(1000)).toMatch(/does not change: raise --max-memory$/);
    // Nor when the frozen weights and the command's own 20 MiB are: a stage that trains nothing
    // still needs them (a 10 MiB budget is above the weights but below the command alone).
    expect(refusal(10 * 2 ** 20)).toMatch(/does not change: raise --max-memory$/);
    expect(refusal(Math.floor(1.15 * 944) + COMMAND_BYTES)).toMatch(/does not change: raise --max-memory$/);
    expect(refusal(Math.ceil(1.15 * 944) + COMMAND_BYTES)).toMatch(/raise --max-memory, or train fewer tensors/);
  });
});

describe('checkWasmHeap with a training estimate', () => {
  const GiB = 2 ** 30;
  it('suggests a smaller batch only when the batch-dependent part can make it fit', () => {
    const batchBound = { tfHeapBytes: 4 * GiB, weightBytes: 1 * GiB, optimizerBytes: 1 * GiB };
    expect(() => checkWasmHeap('wasm', batchBound, 'training')).toThrow(/; lower --batch-size or --seq-len .*, or use another backend/);
    const tooBig = { tfHeapBytes: 5 * GiB, weightBytes: 1.5 * GiB, optimizerBytes: 2 * GiB };
    expect(() => checkWasmHeap('wasm', tooBig, 'training')).toThrow(ResourceLimitError);
    expect(() => checkWasmHeap('wasm', tooBig, 'training', undefined, { method: 'apex', setting: 'full' })).toThrow(
      /; the weights, gradients and optimizer state alone need about 4\.32 GB of it, which a smaller batch or sequence length does not change: use another backend \(--backend webgpu, tensorflow or cpu\), or train fewer tensors \(--setting structured or operators, or --method lora\)$/,
    );
    expect(() => checkWasmHeap('wasm', tooBig, 'training', undefined, { method: 'lora', setting: null })).toThrow(/does not change: use another backend \(--backend webgpu, tensorflow or cpu\)$/);
    expect(() => checkWasmHeap('wasm', tooBig, 'training')).not.toThrow(/--batch-size/);
    expect(() => checkWasmHeap('cpu', tooBig, 'training')).not.toThrow();
  });
});
