// Edge cases of a dry run's header reads (resolveModel weights: 'headers'): a partly cached
// sharded model, a commit-sha revision, a server that ignores Range on one request, a 206 that
// holds less than asked.
import { readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { resolveModel } from '../../src/io/resolve-model.js';
import { C_SINGLE, fingerprintOf, makeWorld, SHARDED, SINGLE, type World } from './setup.js';

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

describe("a dry run's header reads: edge cases", () => {
  it('a sharded model with one shard cached: only the other is read remotely, same tensors and fingerprint', async () => {
    const full = await resolveModel(SHARDED, w.options());
    const fullFp = await fingerprintOf(full.dir);
    const link = join(full.dir, 'model-00002-of-00002.safetensors');
    await rm(join(full.dir, await readlink(link)));
    await rm(link);
    await rm(join(w.cacheDir, 'models--tiny-org--stories-sharded', 'refs'), { recursive: true });
    const dry = await resolveModel(SHARDED, w.options({ weights: 'headers' }));
    expect(dry.remoteWeights?.files.map((f) => f.file)).toEqual(['model-00002-of-00002.safetensors']);
    expect(await fingerprintOf(dry.dir, { remoteWeights: dry.remoteWeights! })).toEqual(fullFp);
  });

  it('a revision given as a commit sha: the dry run leaves no snapshot the real run would take for complete', async () => {
    const dry = await resolveModel(`${SINGLE}@${C_SINGLE}`, w.options({ weights: 'headers' }));
    expect(dry.remoteWeights?.files.length).toBe(1);
    const again = await resolveModel(`${SINGLE}@${C_SINGLE}`, w.options());
    expect(again.source).toBe('hub');
    const ck = await Checkpoint.open(again.dir);
    expect(ck.hasData).toBe(true);
    await ck.close();
  });

  it('a server that honours the first Range but ignores the second (200, whole file) gives the same header', async () => {
    const ranged = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    const stripping: typeof fetch = (url, init) => {
      const h = new Headers(init?.headers);
      if (/^bytes=8-/.test(h.get('range') ?? '')) h.delete('range');
      return fetch(url, { ...init, headers: h });
    };
    const whole = await resolveModel(SINGLE, w.options({ weights: 'headers', fetch: stripping }));
    expect(whole.remoteWeights!.files[0]!.header).toEqual(ranged.remoteWeights!.files[0]!.header);
  });

  it('a server that answers the header range with fewer bytes than asked (a 206 for a prefix, as RFC 9110 §15.3.7 allows)', async () => {
    const ranged = await resolveModel(SINGLE, w.options({ weights: 'headers' }));
    // Caps each 206 at 100 bytes, with a Content-Range saying so.
    const capping: typeof fetch = async (url, init) => {
      const res = await fetch(url, init);
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      if (res.status !== 206 || !m || Number(m[2]) - Number(m[1]) + 1 <= 100) return res;
      const body = new Uint8Array(await res.arrayBuffer()).subarray(0, 100);
      return new Response(body, { status: 206, headers: { 'Content-Range': `bytes ${m[1]}-${Number(m[1]) + 99}/${m[3]}`, 'Content-Length': '100' } });
    };
    const r = await resolveModel(SINGLE, w.options({ weights: 'headers', fetch: capping })).catch((e: unknown) => e);
    expect(r).not.toBeInstanceOf(Error);
    expect((r as typeof ranged).remoteWeights!.files[0]!.header).toEqual(ranged.remoteWeights!.files[0]!.header);
  });
});
