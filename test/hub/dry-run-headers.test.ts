/**
 * A dry run's Hub model (resolveModel with `weights: 'headers'`): the small files land in the
 * cache as always, but of each weight file not cached only the safetensors header is read, with
 * Range requests, validated as the local reader validates a file; the header-only checkpoint
 * built from them describes the same tensors as the downloaded one, fingerprints the same (the
 * Hub's LFS sha256 is the sha256 of the bytes), and refuses any read of tensor data.
 */
import { existsSync } from 'node:fs';
import { readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InternalError, OfflineCacheMissError, SafetensorsFormatError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { firstRequestBytes } from '../../src/io/hub-headers.js';
import { resolveModel } from '../../src/io/resolve-model.js';
import { FakeHub, sha256 } from './fake-hub.js';
import { commitHash, shardedRepo, singleFileRepo } from './fixture-repos.js';
import { listTree, fingerprintOf, makeWorld, SHARDED, SINGLE, TOKEN, type World } from './setup.js';

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

const WEIGHTS = /\.safetensors$/;

/** Requests for weight files: every one must be a ranged GET (a HEAD carries no data). */
function weightRequests(hub: FakeHub) {
  return hub.requests.filter((q) => WEIGHTS.test(q.path));
}

describe('a dry run of an uncached Hub model', () => {
  it('reads each shard header with Range requests only, caches no weight blob, and describes the same tensors as the downloaded model', async () => {
    const repo = shardedRepo();
    const shards = Object.keys(repo).filter((f) => WEIGHTS.test(f)).sort();
    const r = await resolveModel(SHARDED, w.options({ weights: 'headers' }));
    expect(r.source).toBe('hub');
    expect(r.remoteWeights?.files.map((f) => f.file)).toEqual(shards);
    expect(r.remoteWeights?.bytes).toBe(shards.reduce((n, f) => n + repo[f]!.length, 0));
    expect(r.remoteWeights?.files.map((f) => f.sha256)).toEqual(shards.map((f) => sha256(repo[f]!)));

    const gets = weightRequests(w.hub).filter((q) => q.method === 'GET');
    expect(gets.length).toBeGreaterThan(0);
    for (const q of gets) expect(q.range, `${q.path} fetched without a Range`).toMatch(/^bytes=\d+-\d+$/);
    // Nothing near a whole shard was asked for: each range ends within its file's header or its
    // first request (at most 1/64 of the file), and a header that fits the first request costs one.
    for (const q of gets) {
      const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(q.range!)!.map(Number);
      const file = q.path.split('/').pop()!;
      expect(b! + 1).toBeLessThanOrEqual(Math.max(8 + Number(repo[file]!.readBigUInt64LE(0)), firstRequestBytes(repo[file]!.length)));
    }
    for (const f of shards) {
      const fits = 8 + Number(repo[f]!.readBigUInt64LE(0)) <= firstRequestBytes(repo[f]!.length);
      // Each ranged read is a GET of /resolve/…, answered by a redirect to the CDN.
      expect(gets.filter((q) => q.path.includes('/resolve/') && q.path.endsWith(`/${f}`)), f).toHaveLength(fits ? 1 : 2);
    }
    // The small files are cached, no weight file is (neither as a blob nor in the snapshot).
    const tree = await listTree(join(w.cacheDir, 'models--tiny-org--stories-sharded'));
    for (const f of shards) expect(tree).not.toContain(`blobs/${sha256(repo[f]!)}`);
    expect(tree.filter((p) => WEIGHTS.test(p))).toEqual([]);
    expect(tree).toContain(`snapshots/${r.commit}/model.safetensors.index.json`);
    expect(tree).toContain(`snapshots/${r.commit}/tokenizer.json`);
    expect(tree.filter((p) => p.startsWith('refs/'))).toEqual([]); // a ref only to a complete snapshot
    w.progress.length = 0;

    const headerOnly = await Checkpoint.open(r.dir, { remoteWeights: r.remoteWeights! });
    expect(headerOnly.hasData).toBe(false);
    const name = headerOnly.tensorNames()[0]!;
    const err = await headerOnly.readFloat32(name).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InternalError);
    expect((err as InternalError).exit).toBe(1);
    expect((err as Error).message).toContain(`${SHARDED}@main/`);
    await expect(headerOnly.readBytes(name)).rejects.toBeInstanceOf(InternalError);
    await expect((async () => { for await (const _ of headerOnly.readChunks(name)) void _; })()).rejects.toBeInstanceOf(InternalError);
    await expect(headerOnly.readInto(name, 0, new Uint8Array(1))).rejects.toBeInstanceOf(InternalError);

    // The same model downloaded: the same tensors, the same fingerprint.
    const full = await resolveModel(SHARDED, w.options());
    expect(full.dir).toBe(r.dir);
    expect(full.remoteWeights).toBeUndefined();
    const downloaded = await Checkpoint.open(full.dir);
    expect(downloaded.hasData).toBe(true);
    expect(headerOnly.tensors()).toEqual(downloaded.tensors());
    expect(headerOnly.shardFiles).toEqual(downloaded.shardFiles);
    expect(headerOnly.totalBytes()).toBe(downloaded.totalBytes());
    await headerOnly.close();
    await downloaded.close();
    expect(await fingerprintOf(r.dir, { remoteWeights: r.remoteWeights! })).toEqual(await fingerprintOf(full.dir));
  });

  it('a single-file model: one weight file left on the Hub; once cached, a dry run uses the cache with no network', async () => {
    const r = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    expect(r.remoteWeights?.files.map((f) => f.file)).toEqual(['model.safetensors']);
    expect(existsSync(join(r.dir, 'model.safetensors'))).toBe(false);
    await resolveModel(SINGLE, w.options());
    const before = w.hub.requests.length;
    const cached = await resolveModel(SINGLE, w.options({ weights: 'headers', offline: true }));
    expect(cached).toEqual({ dir: r.dir, source: 'cache', repo: SINGLE, revision: 'main', commit: r.commit });
    expect(w.hub.requests.length).toBe(before);
  });

  it('a Hub whose revision API gives no sizes or hashes: HEAD gives them (X-Linked-Etag: the sha256), then the headers are read', async () => {
    w.hub.blobsMetadata = false;
    const r = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    expect(r.remoteWeights?.files.map((f) => [f.file, f.sha256])).toEqual([['model.safetensors', sha256(singleFileRepo()['model.safetensors']!)]]);
    // One HEAD; each GET (to the Hub, then its redirect to the CDN) ranged.
    expect(weightRequests(w.hub).filter((q) => q.method === 'HEAD')).toHaveLength(1);
    for (const q of weightRequests(w.hub).filter((x) => x.method === 'GET')) expect(q.range).toMatch(/^bytes=\d+-\d+$/);
  });

  it('a snapshot entry whose blob is gone (a dangling link the run would download again) is read from the Hub\'s header, not opened', async () => {
    const full = await resolveModel(SINGLE, w.options());
    const link = join(full.dir, 'model.safetensors');
    await rm(join(full.dir, await readlink(link)));
    const dry = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    expect(dry.remoteWeights?.files.map((f) => f.file)).toEqual(['model.safetensors']);
    const ck = await Checkpoint.open(dry.dir, { remoteWeights: dry.remoteWeights! });
    expect(ck.hasData).toBe(false);
    expect(ck.tensorNames().length).toBeGreaterThan(0);
    await ck.close();
    // The run downloads it again and reads it.
    const real = await resolveModel(SINGLE, w.options());
    const downloaded = await Checkpoint.open(real.dir);
    expect(downloaded.hasData).toBe(true);
    await downloaded.close();
  });

  it('offline (HF_HUB_OFFLINE) with the model uncached still fails with exit 4, without a request', async () => {
    const err = await resolveModel(SHARDED, w.options({ weights: 'headers', offline: true })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OfflineCacheMissError);
    expect((err as OfflineCacheMissError).exit).toBe(4);
    expect(w.hub.requests).toEqual([]);
  });
});

describe('Range answers', () => {
  it('a server that ignores Range is read only as far as the header, and the header is the same', async () => {
    const ranged = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    w.hub.faults.push({ kind: 'no-range', path: /^\/cdn\//, times: Infinity });
    const whole = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    expect(whole.remoteWeights!.files[0]!.header).toEqual(ranged.remoteWeights!.files[0]!.header);
    expect(existsSync(join(whole.dir, 'model.safetensors'))).toBe(false);
  });

  it('a 206 whose Content-Range gives another size than the Hub lists is retried, then refused (DOWNLOAD_CORRUPT)', async () => {
    w.hub.faults.push({ kind: 'wrong-range-total', path: /^\/cdn\//, times: Infinity });
    const err = await resolveModel(SINGLE, w.options({ weights: 'headers' })).catch((e: unknown) => e);
    expect(err).toMatchObject({ exit: 3, code: 'DOWNLOAD_CORRUPT', message: expect.stringMatching(new RegExp(`${SINGLE}/model\\.safetensors \\(bytes 0-\\d+\\)`)) });
  });
});

/** A safetensors file with `json` as its header (padded to 8 bytes) and `data` after it; `length` overrides the 8-byte length. */
function safetensors(json: string, data: Buffer, length?: bigint): Buffer {
  const text = json + ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(length ?? BigInt(text.length));
  return Buffer.concat([len, Buffer.from(text), data]);
}

describe('a malformed remote header fails as the local reader does, naming the repo and file', () => {
  const good = singleFileRepo();
  const tensorJson = (end: number) => JSON.stringify({ 'model.embed_tokens.weight': { dtype: 'F32', shape: [2, 2], data_offsets: [0, end] } });
  const cases: [label: string, file: Buffer, rule: string][] = [
    ['a header length past the end of the file', safetensors(tensorJson(16), Buffer.alloc(16), 1_000_000n), 'header-length'],
    ['a header length over the limit', safetensors(tensorJson(16), Buffer.alloc(16), 200_000_000n), 'header-too-large'],
    ['truncated header JSON', safetensors(tensorJson(16).slice(0, 70), Buffer.alloc(16)), 'header-json'],
    ['data offsets out of range of the file', safetensors(JSON.stringify({ a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }), Buffer.alloc(16)), 'truncated'],
    ['a tensor whose shape does not match its offsets', safetensors(tensorJson(12), Buffer.alloc(12)), 'tensor-size'],
  ];
  it.each(cases)('%s', async (_label, file, rule) => {
    const id = 'bad-org/bad-model';
    const hub = await new FakeHub([{ id, refs: { main: commitHash('bad') }, commits: { [commitHash('bad')]: { ...good, 'model.safetensors': file } } }]).start();
    hub.tokens.set(TOKEN, { gatedAccess: true });
    try {
      const err = await resolveModel(id, w.options({ hubUrl: hub.url, weights: 'headers' })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SafetensorsFormatError);
      expect((err as SafetensorsFormatError).rule).toBe(rule);
      expect((err as Error).message).toContain(`${id}@main/model.safetensors: invalid safetensors (${rule})`);
      expect((err as SafetensorsFormatError).exit).toBe(3);
      for (const q of weightRequests(hub).filter((x) => x.method === 'GET')) expect(q.range).toMatch(/^bytes=\d+-\d+$/);
    } finally {
      await hub.close();
    }
  });
});
