// digestShard (expand-verify.ts) on a file of many read chunks: the whole-file sha256 computed
// in a worker thread, per-tensor sha256 and crc32 on the main thread, all against digests
// computed here directly from the file's bytes; and an aborted pass stops cleanly.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { writeSafetensors } from '../../src/io/safetensors-writer.js';
import { digestShard } from '../../src/pipeline/expand-verify.js';

describe('digestShard', () => {
  let dir = '';
  const file = 'model.safetensors';
  // 6 tensors of 5 MiB: the file spans more read chunks than the pool has buffers, and tensor
  // boundaries fall inside chunks.
  const tensors = Array.from({ length: 6 }, (_, k) => {
    const data = new Uint8Array(5 * 2 ** 20 + 4 * k);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + k * 7) & 0xff;
    return { name: `t${k}`, dtype: 'U8' as const, shape: [data.length], data };
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'apex-digest-'));
    await writeSafetensors(join(dir, file), tensors);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives the file sha256 and the requested per-tensor digests', async () => {
    const bytes = await readFile(join(dir, file));
    const st = await SafetensorsFile.open(join(dir, file));
    const dataOffset = st.header.dataOffset;
    const ranges = new Map(st.tensors.map((t) => [t.name, bytes.subarray(dataOffset + t.begin, dataOffset + t.end)]));
    await st.close();
    let seen = 0;
    const d = await digestShard(dir, file, { sha256: new Set(['t1', 't4']), crc32: new Set(['t0', 't5']) }, undefined, (n) => (seen += n));
    expect(d.bytes).toBe(bytes.length);
    expect(seen).toBe(bytes.length);
    expect(d.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect([...d.tensorSha256.keys()].sort()).toEqual(['t1', 't4']);
    for (const name of ['t1', 't4']) expect(d.tensorSha256.get(name)).toBe(createHash('sha256').update(ranges.get(name)!).digest('hex'));
    expect([...d.tensorCrc32.keys()].sort()).toEqual(['t0', 't5']);
    for (const name of ['t0', 't5']) expect(d.tensorCrc32.get(name)).toBe(crc32(ranges.get(name)!));
  });

  it('stops with the abort reason when the signal fires mid-file', async () => {
    const controller = new AbortController();
    let seen = 0;
    const pass = digestShard(dir, file, {}, controller.signal, (n) => {
      seen += n;
      if (seen > 8 * 2 ** 20) controller.abort(new Error('stop here'));
    });
    await expect(pass).rejects.toThrow('stop here');
  });
});
