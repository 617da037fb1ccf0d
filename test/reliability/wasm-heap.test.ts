// The wasm backend's 4 GiB heap (issue 8): training whose tf-heap estimate exceeds the usable
// part of it is refused before anything is written (exit 5, MEMORY_WASM_HEAP) instead of
// aborting mid-run. The model is a ~96M-parameter LLaMA whose safetensors file is only a header
// and a sparse tail: the refusal comes before any weight is read, so the test needs no weights.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { llamaConfig } from '../../bench/random-checkpoint.js';
import { ResourceLimitError } from '../../src/errors.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { parseModelConfig } from '../../src/model/config.js';
import { checkWasmHeap, WASM_HEAP_LIMIT_BYTES, WASM_HEAP_USABLE_BYTES } from '../../src/model/wasm-heap-limit.js';
import { estimateTrainingMemory } from '../../src/train/stage-memory.js';
import { apex, ensureBuilt, listTree, workspace } from './cli.js';
import { MEDIUM_SHAPE, writeSparseCheckpoint } from './sparse-checkpoint.js';

const ws = workspace('wasm-heap');
const MODEL = join(ws, 'medium');
const IDS = join(ws, 'ids.safetensors');
const SHAPE = MEDIUM_SHAPE;

describe('wasm heap limit', () => {
  it('refuses on wasm only, above 90% of 4 GiB (hand-computed boundary)', () => {
    expect(WASM_HEAP_LIMIT_BYTES).toBe(4294967296);
    expect(WASM_HEAP_USABLE_BYTES).toBe(3865470566); // ⌊0.9 · 2³²⌋
    expect(() => checkWasmHeap('wasm', 3865470566, 'x')).not.toThrow();
    expect(() => checkWasmHeap('wasm', 3865470567, 'x')).toThrow(ResourceLimitError);
    expect(() => checkWasmHeap('cpu', 100 * 2 ** 30, 'x')).not.toThrow();
    expect(() => checkWasmHeap('wasm', 3865470567, 'training')).toThrow(/training needs about 3\.87 GB .*limit 4\.29 GB.*--batch-size.*--seq-len.*another backend/);
  });

  it('counts the tf heap with its growth slack; the checkpoint state written at the end stays outside', () => {
    const spec = parseModelConfig(llamaConfig(SHAPE), 'medium');
    const e = estimateTrainingMemory(spec, { batch: 1, seqLen: 16, trainableEntries: 1000, largestTrainable: 10, operators: false, lora: false });
    expect(e.savedStateBytes).toBe(4 * 2 * 10);
    expect(e.tfHeapBytes).toBe(Math.round(1.15 * (e.weightBytes + e.optimizerBytes + e.activationBytes + e.logitBytes)));
    expect(e.totalBytes).toBe(e.tfHeapBytes + e.savedStateBytes + e.commandBytes);
  });

  describe('finetune of a ~96M-parameter model, structured, batch 8 × 128, on wasm', () => {
    let result: Awaited<ReturnType<typeof apex>>;
    let before: string[];
    beforeAll(async () => {
      await ensureBuilt(['finetune']);
      writeSparseCheckpoint(MODEL);
      await writeSafetensors(IDS, [i32Tensor('input_ids', [16, 128], Int32Array.from({ length: 16 * 128 }, (_, i) => (i * 7919) % 2048))]);
      before = listTree(ws);
      result = await apex(['finetune', MODEL, '-o', join(ws, 'out'), '--input-ids', IDS, '--setting', 'structured', '--batch-size', '8', '--seq-len', '128', '--steps', '1', '--backend', 'wasm', '--json'], { cwd: ws, home: join(ws, 'hf-home') });
    }, 120_000);

    it('exits 5 naming the estimate, the limit and what to change', () => {
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(5);
      expect(result.json?.error?.code).toBe('MEMORY_WASM_HEAP');
      expect(result.json?.error?.message).toMatch(/needs about [\d.]+ GB of tensor memory.*limit 4\.29 GB.*--batch-size or --seq-len.*another backend/);
    });

    it('writes nothing', () => {
      expect(existsSync(join(ws, 'out'))).toBe(false);
      expect(listTree(ws)).toEqual(before);
    });
  });
});
