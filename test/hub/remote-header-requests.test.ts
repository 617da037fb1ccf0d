/**
 * How many Range requests a dry run spends on a Hub weight file's safetensors header
 * (readRemoteHeader): one when the header fits the first request (most checkpoints' files: the
 * first request asks for up to 64 KiB), two when it does not, the second for exactly the part of
 * the header the first did not hold; never more than 1/64 of the file past its header. The bytes
 * come from a real header (planSafetensorsLayout) behind a stub client, and the parsed header is
 * checked against the same header parsed whole.
 */
import { describe, expect, it } from 'vitest';
import type { HubClient, RemoteFile } from '../../src/io/hub-download.js';
import { firstRequestBytes, readRemoteHeader } from '../../src/io/hub-headers.js';
import { parseHeader } from '../../src/io/safetensors-reader.js';
import { planSafetensorsLayout } from '../../src/io/safetensors-writer.js';

/** A file of `size` bytes that starts with `header` (the data is never asked for); records each range. */
function stubClient(header: Uint8Array, size: number) {
  const ranges: [number, number][] = [];
  const client = {
    readRange: async (_ctx: unknown, _commit: string, file: RemoteFile, start: number, length: number) => {
      expect(start + length).toBeLessThanOrEqual(file.size);
      ranges.push([start, length]);
      const out = new Uint8Array(length);
      out.set(header.subarray(Math.min(start, header.length), Math.min(start + length, header.length)));
      return out;
    },
  } as unknown as HubClient;
  return { client, ranges };
}

/** A layout of `count` F32 tensors of 1,000,000 entries each (4 MB each). */
function layout(count: number) {
  return planSafetensorsLayout(Array.from({ length: count }, (_, i) => ({ name: `model.layers.${i}.mlp.down_proj.weight`, dtype: 'F32' as const, shape: [1000, 1000] })));
}

const ctx = { repo: 'org/model', revision: 'main' };

describe('readRemoteHeader', () => {
  it('reads a header that fits the first request with one request', async () => {
    const l = layout(50);
    expect(l.headerBytes.length).toBeLessThan(64 * 1024);
    const { client, ranges } = stubClient(l.headerBytes, l.fileBytes);
    const { weight, received } = await readRemoteHeader(client, ctx, 'c0ffee', { path: 'model-00001-of-00002.safetensors', size: l.fileBytes, etag: 'e'.repeat(64) });
    expect(ranges).toEqual([[0, 64 * 1024]]);
    expect(received).toBe(64 * 1024);
    expect(weight.header.tensors).toHaveLength(50);
    expect(weight.header).toEqual(parseHeader('whole', l.headerBytes.subarray(8), l.fileBytes));
  });

  it('asks a second time for exactly the rest of a longer header', async () => {
    const l = layout(1200);
    const headerEnd = l.headerBytes.length;
    expect(headerEnd).toBeGreaterThan(64 * 1024);
    const { client, ranges } = stubClient(l.headerBytes, l.fileBytes);
    const { weight, received } = await readRemoteHeader(client, ctx, 'c0ffee', { path: 'big.safetensors', size: l.fileBytes, etag: 'e'.repeat(64) });
    expect(ranges).toEqual([[0, 64 * 1024], [64 * 1024, headerEnd - 64 * 1024]]);
    expect(received).toBe(headerEnd);
    expect(weight.header.tensors).toHaveLength(1200);
    expect(weight.header).toEqual(parseHeader('whole', l.headerBytes.subarray(8), l.fileBytes));
  });

  it('asks a small file for at most 1/64 of it past the header, and a tiny one for its first 64 bytes', () => {
    expect(firstRequestBytes(2 ** 31)).toBe(64 * 1024);
    expect(firstRequestBytes(640_000)).toBe(10_000);
    expect(firstRequestBytes(1000)).toBe(64);
    expect(firstRequestBytes(40)).toBe(40);
  });
});
