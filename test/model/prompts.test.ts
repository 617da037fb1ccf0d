// Prompts from --input-ids files written by `generate --ids-out` (input_ids + attention_mask).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { buildPrompts, paddedIds } from '../../src/model/prompts.js';

const spec = { bosTokenId: 1 } as ModelSpec;

async function idsFile(rows: number[][]): Promise<string> {
  const path = join(mkdtempSync(join(tmpdir(), 'apex-prompts-')), 'ids.safetensors');
  const { ids, attentionMask, shape } = paddedIds(rows.map((r) => Int32Array.from(r)), 0);
  await writeSafetensors(path, [i32Tensor('input_ids', shape, ids), i32Tensor('attention_mask', shape, attentionMask)]);
  return path;
}

describe('buildPrompts from --ids-out files', () => {
  it('rows of one real length are cut to it', async () => {
    const prompts = await buildPrompts({ inputIds: await idsFile([[1, 5, 6], [1, 7, 8]]), spec });
    expect(prompts.map((p) => Array.from(p))).toEqual([[1, 5, 6], [1, 7, 8]]);
  });

  it('rows of different real lengths are each cut to their own real tokens (apex generate batches them by length)', async () => {
    const prompts = await buildPrompts({ inputIds: await idsFile([[1, 5, 6, 2], [1, 7, 8, 9, 10]]), spec });
    expect(prompts.map((p) => Array.from(p))).toEqual([[1, 5, 6, 2], [1, 7, 8, 9, 10]]);
  });
});
