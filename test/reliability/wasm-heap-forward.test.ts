// The wasm heap and the streaming forward (issue 8): a --max-memory above the wasm backend's
// 4 GiB heap must not let analyze or eval plan chunks the heap cannot hold (that aborts, exit 1).
// On wasm the plan keeps its tf-heap part within the usable heap (smaller chunks), and refuses
// (exit 5, MEMORY_WASM_HEAP) when one sequence alone does not fit. The model is the ~96M
// LLaMA of wasm-heap.test.ts as a sparse file: the plan is made before any weight is read.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { llamaConfig } from '../../bench/random-checkpoint.js';
import { ResourceLimitError } from '../../src/errors.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { parseModelConfig } from '../../src/model/config.js';
import { estimateForwardMemory, planForward } from '../../src/model/memory-estimate.js';
import { tfHeapAllowance, WASM_HEAP_USABLE_BYTES } from '../../src/model/wasm-heap-limit.js';
import { apex, ensureBuilt, listTree, workspace } from './cli.js';
import { MEDIUM_SHAPE, writeSparseCheckpoint } from './sparse-checkpoint.js';

const ws = workspace('wasm-heap-forward');
const MODEL = join(ws, 'medium');
const IDS = join(ws, 'ids.safetensors');
const SHAPE = MEDIUM_SHAPE;
const SPEC = parseModelConfig(llamaConfig(SHAPE), 'medium');
const GiB = 2 ** 30;

describe('forward plan within the wasm heap', () => {
  it('allows the usable heap on wasm only', () => {
    expect(tfHeapAllowance('wasm')).toBe(WASM_HEAP_USABLE_BYTES);
    expect(tfHeapAllowance('cpu')).toBe(Infinity);
    expect(tfHeapAllowance('webgpu')).toBe(Infinity);
  });

  it('picks the largest chunk whose tf-heap part fits, under a budget far above the heap', () => {
    // 64 × 1024 tokens, 64 GiB: per sequence ≈ 1024 · 46,336 · 4 B of activations + 4 · 12 ·
    // 1024² · 4 B of scores ≈ 391 MB; layer 28 MB, lm_head block at 1024 rows ≈ 24 MB per
    // sequence: 9 sequences ≈ 3.75 GB fit 0.9 · 4 GiB = 3.87 GB, 10 do not.
    const uncapped = planForward(SPEC, 64, 1024, 64 * GiB, 64);
    expect(uncapped.estimate.tfHeapBytes).toBeGreaterThan(WASM_HEAP_USABLE_BYTES);
    const capped = planForward(SPEC, 64, 1024, 64 * GiB, 64, WASM_HEAP_USABLE_BYTES);
    expect(capped.chunkSequences).toBe(9);
    expect(capped.estimate.tfHeapBytes).toBeLessThanOrEqual(WASM_HEAP_USABLE_BYTES);
    const next = estimateForwardMemory(SPEC, 10, 1024, { totalSequences: 64, vocabBlockRows: 1024 });
    expect(next.tfHeapBytes).toBeGreaterThan(WASM_HEAP_USABLE_BYTES);
    // A budget below the heap still decides alone.
    expect(planForward(SPEC, 64, 1024, 2 * GiB, 64, WASM_HEAP_USABLE_BYTES)).toEqual(planForward(SPEC, 64, 1024, 2 * GiB, 64));
  });

  it('refuses when one sequence alone exceeds the heap, whatever the budget', () => {
    // 4096 tokens: scores 4 · 12 · 4096² · 4 B = 3.22 GB, other activations 0.76 GB, layer 0.03 GB,
    // lm_head block of 1024 rows with its logits 0.10 GB: 4.1 GB > 3.87 GB.
    expect(() => planForward(SPEC, 1, 4096, 64 * GiB, 1, WASM_HEAP_USABLE_BYTES)).toThrow(ResourceLimitError);
    expect(() => planForward(SPEC, 1, 4096, 64 * GiB, 1, WASM_HEAP_USABLE_BYTES)).toThrow(/4096-token sequence needs about 4\.1\d GB of tensor memory.*wasm backend's heap/);
    expect(planForward(SPEC, 1, 4096, 64 * GiB, 1).chunkSequences).toBe(1);
  });

  describe('analyze and eval of one 4096-token sequence, --max-memory 64GiB, on wasm', () => {
    const results: Record<string, Awaited<ReturnType<typeof apex>>> = {};
    let before: string[];
    beforeAll(async () => {
      await ensureBuilt(['analyze', 'eval']);
      writeSparseCheckpoint(MODEL);
      await writeSafetensors(IDS, [i32Tensor('input_ids', [1, 4096], Int32Array.from({ length: 4096 }, (_, i) => (i * 7919) % 2048))]);
      before = listTree(ws);
      const common = ['--input-ids', IDS, '--seq-len', '4096', '--max-memory', '64GiB', '--backend', 'wasm', '--json'];
      results.analyze = await apex(['analyze', MODEL, '-o', join(ws, 'analysis'), ...common], { cwd: ws, home: join(ws, 'hf-home') });
      results.eval = await apex(['eval', MODEL, ...common], { cwd: ws, home: join(ws, 'hf-home') });
    }, 120_000);

    it.each(['analyze', 'eval'])('%s exits 5 (MEMORY_WASM_HEAP) instead of aborting', (command) => {
      const r = results[command]!;
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(5);
      expect(r.json?.error?.code).toBe('MEMORY_WASM_HEAP');
    });

    it('writes nothing', () => {
      expect(existsSync(join(ws, 'analysis'))).toBe(false);
      expect(listTree(ws)).toEqual(before);
    });
  });
});
