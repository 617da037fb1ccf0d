/**
 * Files larger than 2 GiB: Node cannot read them in one call, so the reader must seek by
 * offset. A sparse 3.2 GiB file (no real disk use) with known bytes at its far end.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { planSafetensorsLayout } from '../../src/io/safetensors-writer.js';
import { tempDir } from './helpers.js';

const dir = await tempDir('apex-sparse-');

describe('files larger than 2 GiB', () => {
  it('reads tensors past the 2 GiB and 3 GiB marks of a sparse file', async () => {
    const rows = 800_000;
    const cols = 2048; // BF16: 3.05 GiB
    const layout = planSafetensorsLayout([
      { name: 'head', dtype: 'F32', shape: [4] },
      { name: 'big', dtype: 'BF16', shape: [rows, cols] },
      { name: 'tail', dtype: 'U8', shape: [16] },
    ]);
    expect(layout.tensors.map((t) => t.name)).toEqual(['head', 'big', 'tail']);
    const dataOffset = layout.headerBytes.length;
    const path = join(dir, 'big.safetensors');
    const h = await open(path, 'w');
    await h.write(layout.headerBytes, 0, layout.headerBytes.length, 0);
    await h.write(new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer), 0, 16, dataOffset);
    const big = layout.tensors[1]!;
    // last two rows of `big`: row r-2 all 1.0 (0x3f80), row r-1 all -2.0 (0xc000)
    const lastRows = new Uint16Array(2 * cols);
    lastRows.fill(0x3f80, 0, cols);
    lastRows.fill(0xc000, cols);
    await h.write(new Uint8Array(lastRows.buffer), 0, lastRows.byteLength, dataOffset + big.end - lastRows.byteLength);
    const tail = Uint8Array.from({ length: 16 }, (_, i) => 200 + i);
    await h.write(tail, 0, 16, dataOffset + layout.tensors[2]!.begin);
    await h.truncate(layout.fileBytes);
    await h.close();
    expect(layout.fileBytes).toBeGreaterThan(3 * 2 ** 30);

    const f = await SafetensorsFile.open(path);
    expect(f.fileSize).toBe(layout.fileBytes);
    expect([...(await f.readFloat32('head'))]).toEqual([1, 2, 3, 4]);
    expect([...(await f.readBytes('tail'))]).toEqual([...tail]);
    const rowsBack = await f.readRowsFloat32('big', rows - 2, rows);
    expect(rowsBack.length).toBe(2 * cols);
    expect(rowsBack[0]).toBe(1);
    expect(rowsBack[cols - 1]).toBe(1);
    expect(rowsBack[cols]).toBe(-2);
    expect(rowsBack[2 * cols - 1]).toBe(-2);
    const mid = await f.readBytes('big', { start: 2 ** 31 - 2, end: 2 ** 31 + 2 }); // straddles 2 GiB, sparse zeros
    expect([...mid]).toEqual([0, 0, 0, 0]);
    await f.close();
  });
});
