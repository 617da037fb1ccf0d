import { execFileSync } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApexError, ResourceLimitError } from '../../src/errors.js';
import { encodeFromFloat32 } from '../../src/io/float-codec.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { f32Tensor, i32Tensor, planSafetensorsLayout, type TensorToWrite, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { canMountTmpfs, pseudoRandomBytes, sameBytes, tempDir } from './helpers.js';

const dir = await tempDir('apex-writer-');

describe('safetensors layout', () => {
  it('orders by dtype alignment (largest first) then name, pads the header with spaces to a multiple of 8', () => {
    const layout = planSafetensorsLayout([
      { name: 'b.u8', dtype: 'U8', shape: [3] },
      { name: 'z.f32', dtype: 'F32', shape: [2] },
      { name: 'a.bf16', dtype: 'BF16', shape: [1] },
      { name: 'a.f64', dtype: 'F64', shape: [1] },
      { name: 'a.f32', dtype: 'F32', shape: [1] },
    ]);
    expect(layout.tensors.map((t) => t.name)).toEqual(['a.f64', 'a.f32', 'z.f32', 'a.bf16', 'b.u8']);
    expect(layout.tensors.map((t) => [t.begin, t.end])).toEqual([[0, 8], [8, 12], [12, 20], [20, 22], [22, 25]]);
    const n = Number(new DataView(layout.headerBytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    expect(layout.headerBytes.length).toBe(8 + n);
    const text = new TextDecoder().decode(layout.headerBytes.subarray(8));
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    expect(JSON.parse(text).__metadata__).toEqual({ format: 'pt' });
    expect(layout.fileBytes).toBe(8 + n + 25);
  });

  it('rejects duplicate names, the reserved name and overflowing shapes before writing', () => {
    expect(() => planSafetensorsLayout([{ name: 'a', dtype: 'F32', shape: [1] }, { name: 'a', dtype: 'F32', shape: [1] }])).toThrow(/twice/);
    expect(() => planSafetensorsLayout([{ name: '__metadata__', dtype: 'F32', shape: [1] }])).toThrow(/reserved/);
    expect(() => planSafetensorsLayout([{ name: 'a', dtype: 'F32', shape: [2 ** 52, 2 ** 52] }])).toThrow(/overflow/);
    // names and metadata must be Unicode text: a lone surrogate would make a file the crate refuses
    expect(() => planSafetensorsLayout([{ name: 'w\ud800', dtype: 'F32', shape: [1] }])).toThrow(/unpaired UTF-16 surrogate/);
    expect(() => planSafetensorsLayout([{ name: 'a', dtype: 'F32', shape: [1] }], { note: '\udfff' })).toThrow(/unpaired UTF-16 surrogate/);
    expect(planSafetensorsLayout([{ name: 'emoji \ud83d\ude00', dtype: 'F32', shape: [1] }]).tensors.length).toBe(1);
  });
});

describe('writeSafetensors', () => {
  it('names the missing or non-folder output folder, not its temporary file (exit 2)', async () => {
    const dir = await tempDir('apex-w-');
    const missing = join(dir, 'no-such-dir', 'ids.safetensors');
    const e = await writeSafetensors(missing, [{ name: 'a', dtype: 'F32', shape: [1], data: new Uint8Array(4) }]).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2, message: expect.stringMatching(/no-such-dir: cannot write there, the folder does not exist/) });
    expect((e as Error).message).not.toMatch(/\.tmp-/);
    await writeFile(join(dir, 'file'), 'x');
    const f = await writeSafetensors(join(dir, 'file', 'ids.safetensors'), [{ name: 'a', dtype: 'F32', shape: [1], data: new Uint8Array(4) }]).catch((x: unknown) => x);
    expect(f).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', message: expect.stringMatching(/is a file, not a folder/) });
  });

  it('round-trips F32/F16/BF16 and raw dtypes bit-exactly, keeping metadata and format=pt', async () => {
    const values = new Float32Array(new Uint32Array(pseudoRandomBytes(4 * 300, 7).buffer).map((b) => (b & 0x807fffff) | 0x3f000000));
    values[0] = -0; values[1] = Infinity; values[2] = NaN; values[3] = 1e-40;
    const raw = pseudoRandomBytes(37, 3);
    const tensors: TensorToWrite[] = [
      f32Tensor('f32', [3, 100], values),
      { name: 'f16', dtype: 'F16', shape: [300], data: encodeFromFloat32(values, 'F16') },
      { name: 'bf16', dtype: 'BF16', shape: [10, 30], data: encodeFromFloat32(values, 'BF16') },
      i32Tensor('ids', [2, 2], new Int32Array([1, -2, 2147483647, -2147483648])),
      { name: 'u8', dtype: 'U8', shape: [37], data: raw },
      { name: 'scalar', dtype: 'F64', shape: [], data: new Uint8Array(new Float64Array([Math.PI]).buffer) },
      { name: 'empty', dtype: 'F32', shape: [0, 5], data: new Uint8Array(0) },
    ];
    const path = join(dir, 'roundtrip.safetensors');
    await writeSafetensors(path, tensors, { note: 'hello' });
    const f = await SafetensorsFile.open(path);
    expect(f.metadata).toEqual({ format: 'pt', note: 'hello' });
    for (const t of tensors) {
      expect(f.info(t.name).shape).toEqual(t.shape);
      expect(f.info(t.name).dtype).toBe(t.dtype);
      expect(await f.readBytes(t.name)).toEqual(t.data);
    }
    const back = await f.readFloat32('f32');
    expect(new Uint32Array(back.buffer)).toEqual(new Uint32Array(values.buffer));
    const bf = await f.readFloat32('bf16');
    expect(encodeFromFloat32(bf, 'BF16')).toEqual(tensors[2]!.data);
    const h = await f.readFloat32('f16');
    expect(encodeFromFloat32(h, 'F16')).toEqual(tensors[1]!.data);
    await f.close();
  });

  it('calls lazy sources one at a time, in file order, and accepts chunked streams', async () => {
    let live = 0;
    let maxLive = 0;
    const calls: string[] = [];
    const lazy = (name: string, bytes: Uint8Array): TensorToWrite => ({
      name,
      dtype: 'U8',
      shape: [bytes.length],
      data: async () => {
        calls.push(name);
        live += 1;
        maxLive = Math.max(maxLive, live);
        await new Promise((r) => setTimeout(r, 2));
        live -= 1;
        return bytes;
      },
    });
    const big = pseudoRandomBytes(20 << 20, 9); // larger than the write buffer
    const chunked: TensorToWrite = {
      name: 'c',
      dtype: 'U8',
      shape: [big.length],
      data: async function* () {
        for (let i = 0; i < big.length; i += 3 << 20) yield big.subarray(i, i + (3 << 20));
      },
    };
    const path = join(dir, 'lazy.safetensors');
    await writeSafetensors(path, [lazy('b', new Uint8Array([1, 2])), chunked, lazy('a', new Uint8Array([3]))]);
    expect(calls).toEqual(['a', 'b']);
    expect(maxLive).toBe(1);
    const f = await SafetensorsFile.open(path);
    expect(sameBytes(await f.readBytes('c'), big)).toBe(true);
    expect(await f.readBytes('a')).toEqual(new Uint8Array([3]));
    await f.close();
  });

  it('refuses data whose length does not match the shape, leaving no file and no temp file', async () => {
    const sub = join(dir, 'badlen');
    await mkdir(sub);
    const path = join(sub, 'x.safetensors');
    for (const data of [new Uint8Array(7), new Uint8Array(9)]) {
      const err = await writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [2], data }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApexError);
      expect((err as ApexError).message).toMatch(/needs 8/);
    }
    expect(await readdir(sub)).toEqual([]);
  });

  it('is atomic: a failure mid-write leaves the previous file untouched and removes the temp file', async () => {
    const sub = join(dir, 'atomic');
    await mkdir(sub);
    const path = join(sub, 'x.safetensors');
    await writeFile(path, 'previous');
    const err = await writeSafetensors(path, [{ name: 'x', dtype: 'U8', shape: [4], data: async () => { throw new Error('source failed'); } }]).catch((e: unknown) => e);
    expect((err as Error).message).toBe('source failed');
    expect(await readdir(sub)).toEqual(['x.safetensors']);
    expect(await readFile(path, 'utf8')).toBe('previous');
  });

  it('maps a full disk (injected ENOSPC) to ResourceLimitError, exit 5, with no output', async () => {
    const sub = join(dir, 'enospc');
    await mkdir(sub);
    const beforeWrite = (_p: string, position: number) => {
      if (position > 0) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    };
    const err = await writeSafetensors(join(sub, 'x.safetensors'), [{ name: 'x', dtype: 'U8', shape: [16 << 20], data: new Uint8Array(16 << 20) }], undefined, { beforeWrite }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect((err as ResourceLimitError).exit).toBe(5);
    expect((err as ResourceLimitError).code).toBe('DISK_FULL');
    expect(await readdir(sub)).toEqual([]);
  });

  it.skipIf(!canMountTmpfs())('on a real 1 MiB tmpfs, a 4 MiB file fails with exit 5 and leaves nothing', async () => {
    const mnt = join(dir, 'tmpfs');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const err = await writeSafetensors(join(mnt, 'x.safetensors'), [{ name: 'x', dtype: 'U8', shape: [4 << 20], data: new Uint8Array(4 << 20) }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ResourceLimitError);
      expect((err as ResourceLimitError).exit).toBe(5);
      expect(await readdir(mnt)).toEqual([]);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
