import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadSequences } from '../../src/train/data.js';

/** A minimal safetensors writer for test inputs. */
async function writeSafetensors(path: string, tensors: Array<{ name: string; dtype: string; shape: number[]; data: Uint8Array }>): Promise<string> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  await writeFile(path, Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => t.data)]));
  return path;
}

const i32 = (values: number[]) => new Uint8Array(Int32Array.from(values).buffer);
const i64 = (values: bigint[]) => new Uint8Array(BigInt64Array.from(values).buffer);

describe('--input-ids', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'apex-ids-'));

  it('loads an I32 [B, T] tensor of any name', async () => {
    const path = await writeSafetensors(join(dir, 'a.safetensors'), [{ name: 'whatever', dtype: 'I32', shape: [2, 4], data: i32([1, 5, 6, 7, 1, 8, 9, 10]) }]);
    const set = await loadSequences({ inputIds: path, seqLen: 16, seed: 0 });
    expect(set.seqLen).toBe(4);
    expect(set.sequences.map((s) => Array.from(s))).toEqual([[1, 5, 6, 7], [1, 8, 9, 10]]);
    expect(set.source).toMatchObject({ kind: 'input-ids', paths: [path], documents: 2, tokens: 8 });
    expect(set.source.sha256[0]).toMatch(/^[0-9a-f]{64}$/);
  });

  it('loads I64 ids and truncates rows to seqLen', async () => {
    const path = await writeSafetensors(join(dir, 'b.safetensors'), [{ name: 'input_ids', dtype: 'I64', shape: [1, 5], data: i64([1n, 2047n, 3n, 4n, 5n]) }]);
    const set = await loadSequences({ inputIds: path, seqLen: 3, seed: 0 });
    expect(set.seqLen).toBe(3);
    expect(set.sequences.map((s) => Array.from(s))).toEqual([[1, 2047, 3]]);
  });

  it('refuses wrong dtype, rank, tensor count, out-of-range and negative values', async () => {
    const cases: Array<[string, Parameters<typeof writeSafetensors>[1], RegExp]> = [
      ['f32', [{ name: 'x', dtype: 'F32', shape: [1, 2], data: new Uint8Array(8) }], /dtype F32; token ids must be I32 or I64/],
      ['rank1', [{ name: 'x', dtype: 'I32', shape: [4], data: i32([1, 2, 3, 4]) }], /rank 2/],
      ['rank3', [{ name: 'x', dtype: 'I32', shape: [1, 2, 2], data: i32([1, 2, 3, 4]) }], /rank 2/],
      ['two', [{ name: 'x', dtype: 'I32', shape: [1, 1], data: i32([1]) }, { name: 'y', dtype: 'I32', shape: [1, 1], data: i32([1]) }], /exactly one tensor.*found 2 \(x, y\)/],
      ['big', [{ name: 'x', dtype: 'I64', shape: [1, 2], data: i64([1n, 2n ** 31n]) }], /does not fit in int32/],
      ['neg', [{ name: 'x', dtype: 'I32', shape: [1, 2], data: i32([1, -3]) }], /negative token id -3/],
    ];
    for (const [name, tensors, message] of cases) {
      const path = await writeSafetensors(join(dir, `${name}.safetensors`), tensors);
      const err = await loadSequences({ inputIds: path, seqLen: 8, seed: 0 }).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(InputError);
      expect((err as Error).message, name).toMatch(message);
    }
  });

  it('input_ids with an attention_mask: the right padding is neither a target nor data', async () => {
    const path = await writeSafetensors(join(dir, 'masked.safetensors'), [
      { name: 'input_ids', dtype: 'I32', shape: [2, 5], data: i32([1, 5, 6, 2, 2, 1, 8, 9, 10, 11]) },
      { name: 'attention_mask', dtype: 'I64', shape: [2, 5], data: i64([1n, 1n, 1n, 1n, 0n, 1n, 1n, 1n, 1n, 1n]) },
    ]);
    const set = await loadSequences({ inputIds: path, seqLen: 16, seed: 0 });
    expect(set.lengths).toEqual([4, 5]);
    expect(set.lossMasks!.map((m) => Array.from(m))).toEqual([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]]);
    expect(set.source.tokens).toBe(9);
    // Truncation to seqLen cuts the real lengths too.
    const short = await loadSequences({ inputIds: path, seqLen: 3, seed: 0 });
    expect(short.lengths).toEqual([3, 3]);
    // Masks that are not 1s then 0s, or of another shape, are refused.
    for (const [name, mask, message] of [
      ['left', i32([0, 1, 1, 1, 1, 1, 1, 1, 1, 1]), /all zeros|after the padding began at 0/],
      ['hole', i32([1, 0, 1, 1, 1, 1, 1, 1, 1, 1]), /holds 1 at position 2 after the padding began at 1/],
    ] as const) {
      const p = await writeSafetensors(join(dir, `${name}.safetensors`), [
        { name: 'input_ids', dtype: 'I32', shape: [2, 5], data: i32([1, 5, 6, 2, 2, 1, 8, 9, 10, 11]) },
        { name: 'attention_mask', dtype: 'I32', shape: [2, 5], data: mask },
      ]);
      await expect(loadSequences({ inputIds: p, seqLen: 16, seed: 0 }), name).rejects.toThrow(message);
    }
    const shape = await writeSafetensors(join(dir, 'shape.safetensors'), [
      { name: 'input_ids', dtype: 'I32', shape: [2, 5], data: i32([1, 5, 6, 2, 2, 1, 8, 9, 10, 11]) },
      { name: 'attention_mask', dtype: 'I32', shape: [1, 5], data: i32([1, 1, 1, 1, 1]) },
    ]);
    await expect(loadSequences({ inputIds: shape, seqLen: 16, seed: 0 })).rejects.toThrow(/'attention_mask' has shape \[1, 5\], 'input_ids' \[2, 5\]/);
  });

  it('refuses rows with nothing to predict: one token wide, or every row masked down to one token (exit 3, the file named)', async () => {
    // Training on these reported loss 0 and perplexity 1 and fused a "trained" model.
    const narrow = await writeSafetensors(join(dir, 'narrow.safetensors'), [{ name: 'input_ids', dtype: 'I32', shape: [3, 1], data: i32([1, 5, 6]) }]);
    const error = await loadSequences({ inputIds: narrow, seqLen: 16, seed: 0 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InputError);
    expect(error).toMatchObject({ code: 'BAD_INPUT_IDS', exit: 3, message: expect.stringMatching(/narrow\.safetensors: tensor 'input_ids' has shape \[3, 1\]: a row needs at least 2 tokens/) });
    const masked = await writeSafetensors(join(dir, 'masked-to-one.safetensors'), [
      { name: 'input_ids', dtype: 'I32', shape: [2, 3], data: i32([1, 5, 6, 1, 8, 9]) },
      { name: 'attention_mask', dtype: 'I32', shape: [2, 3], data: i32([1, 0, 0, 1, 0, 0]) },
    ]);
    await expect(loadSequences({ inputIds: masked, seqLen: 16, seed: 0 })).rejects.toMatchObject({ code: 'BAD_INPUT_IDS', message: expect.stringMatching(/masked-to-one\.safetensors: every row has fewer than 2 real tokens \(attention_mask\)/) });
    // One row with a target is enough.
    const some = await writeSafetensors(join(dir, 'one-real.safetensors'), [
      { name: 'input_ids', dtype: 'I32', shape: [2, 3], data: i32([1, 5, 6, 1, 8, 9]) },
      { name: 'attention_mask', dtype: 'I32', shape: [2, 3], data: i32([1, 0, 0, 1, 1, 0]) },
    ]);
    expect((await loadSequences({ inputIds: some, seqLen: 16, seed: 0 })).lengths).toEqual([1, 2]);
    // The held-out part of the split counts on its own: finetune evaluated such a split as loss 0, perplexity 1.
    const rows = 40;
    const mostly = await writeSafetensors(join(dir, 'mostly-one.safetensors'), [
      { name: 'input_ids', dtype: 'I32', shape: [rows, 2], data: i32(Array.from({ length: rows * 2 }, (_, i) => 1 + (i % 50))) },
      { name: 'attention_mask', dtype: 'I32', shape: [rows, 2], data: i32(Array.from({ length: rows * 2 }, (_, i) => (i % 2 === 0 || i < 2 ? 1 : 0))) },
    ]);
    expect((await loadSequences({ inputIds: mostly, seqLen: 16, seed: 0, split: 'train' })).sequences.length).toBe(38);
    await expect(loadSequences({ inputIds: mostly, seqLen: 16, seed: 0, split: 'heldout' })).rejects.toMatchObject({ code: 'BAD_INPUT_IDS', message: expect.stringContaining('every row of the held-out split has fewer than 2 real tokens') });
  });

  it('splits rows into train and held-out', async () => {
    const values = Array.from({ length: 40 * 3 }, (_, i) => i);
    const path = await writeSafetensors(join(dir, 'c.safetensors'), [{ name: 'ids', dtype: 'I32', shape: [40, 3], data: i32(values) }]);
    const train = await loadSequences({ inputIds: path, seqLen: 3, seed: 0, split: 'train' });
    const held = await loadSequences({ inputIds: path, seqLen: 3, seed: 0, split: 'heldout' });
    expect(held.sequences).toHaveLength(2);
    expect(train.sequences).toHaveLength(38);
    const firsts = new Set(train.sequences.map((s) => s[0]));
    for (const s of held.sequences) expect(firsts.has(s[0])).toBe(false);
  });
});
