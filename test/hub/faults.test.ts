/**
 * Hub faults: transient ones (5xx, stalls, truncated or corrupt bodies) are retried or resumed;
 * persistent ones and refusals (401/403/404, gated repos) fail with a clear typed error and exit
 * code; the cache never holds a partial or corrupt file afterwards, and the token never shows.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApexError } from '../../src/errors.js';
import { ensureFreeSpace } from '../../src/io/hub-download.js';
import { resolveModel } from '../../src/io/resolve-model.js';
import type { Fault } from './fake-hub.js';
import { sha256 } from './fake-hub.js';
import { singleFileRepo } from './fixture-repos.js';
import { C_SINGLE, FAST_RETRY, GATED, listTree, makeWorld, NO_GATED_TOKEN, PRIVATE, SINGLE, TOKEN, type World } from './setup.js';

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

const MODEL = singleFileRepo()['model.safetensors']!;
const MODEL_BLOB = sha256(MODEL);
const ROOT = () => join(w.cacheDir, 'models--tiny-org--stories-single');
const WEIGHTS = /^\/cdn\/.*model\.safetensors$/;

async function failure(arg: string, options = w.options()): Promise<ApexError> {
  try {
    await resolveModel(arg, options);
  } catch (e) {
    expect(e).toBeInstanceOf(ApexError);
    const err = e as ApexError;
    expect(err.message).not.toContain(TOKEN);
    expect(err.message).not.toContain(NO_GATED_TOKEN);
    return err;
  }
  throw new Error(`resolveModel(${arg}) succeeded`);
}

/** The cache holds no snapshot entry for the weights, no blob for them and no ref. */
async function expectNoWeightsCached(): Promise<void> {
  const tree = await listTree(ROOT());
  expect(tree.filter((f) => f.startsWith('snapshots/') && f.endsWith('model.safetensors'))).toEqual([]);
  expect(tree).not.toContain(`blobs/${MODEL_BLOB}`);
  expect(tree.filter((f) => f.startsWith('refs/'))).toEqual([]);
}

async function expectWeightsIntact(dir: string): Promise<void> {
  expect((await readFile(join(dir, 'model.safetensors'))).equals(MODEL)).toBe(true);
  expect((await listTree(ROOT())).filter((f) => f.endsWith('.incomplete'))).toEqual([]);
}

function fault(kind: Fault['kind'], path: RegExp, times: number, status?: number): Fault {
  return { kind, path, times, status };
}

describe('transient faults are retried', () => {
  it.each([
    ['HTTP 503 twice', fault('status', WEIGHTS, 2, 503)],
    ['HTTP 500 on the revision API', fault('status', /^\/api\//, 2, 500)],
    ['HTTP 429', fault('status', WEIGHTS, 1, 429)],
    ['a stalled response', fault('stall', /config\.json$/, 1)],
    ['a body that stalls half way', fault('stall-body', WEIGHTS, 1)],
    ['a connection dropped half way', fault('truncate', WEIGHTS, 2)],
    ['a body that ends early without a length', fault('short-chunked', WEIGHTS, 1)],
    ['a corrupt byte', fault('corrupt', WEIGHTS, 1)],
    ['a wrong Content-Length', fault('wrong-length', WEIGHTS, 1)],
  ])('%s', async (_label, f) => {
    w.hub.faults = [f];
    const r = await resolveModel(SINGLE, w.options());
    expect(f.times).toBe(0);
    await expectWeightsIntact(r.dir);
    expect(w.progress.some((l) => l.includes('retrying'))).toBe(true);
  });

  it('resumes a cut transfer with a Range request instead of starting over', async () => {
    w.hub.faults = [fault('truncate', WEIGHTS, 1)];
    const r = await resolveModel(SINGLE, w.options());
    const weightGets = w.hub.requests.filter((q) => WEIGHTS.test(q.path));
    expect(weightGets.length).toBe(2);
    expect(weightGets[0]!.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(weightGets[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(MODEL.length / 2);
    await expectWeightsIntact(r.dir);
  });
});

describe('persistent faults fail cleanly', () => {
  it('a Hub that keeps answering 503 → exit 4 naming repo, revision and cache folder', async () => {
    w.hub.faults = [fault('status', WEIGHTS, Infinity, 503)];
    const e = await failure(SINGLE);
    expect(e.exit).toBe(4);
    expect(e.message).toContain(`${SINGLE}@main`);
    expect(e.message).toContain(ROOT());
    expect(e.message).toContain('HTTP 503');
    expect(w.hub.requests.filter((q) => WEIGHTS.test(q.path)).length).toBe(FAST_RETRY.attempts);
    await expectNoWeightsCached();
  });

  it('a Hub that never answers → exit 4 after the idle timeout', async () => {
    w.hub.faults = [fault('stall', /^\/api\//, Infinity)];
    const e = await failure(SINGLE, w.options({ retry: { ...FAST_RETRY, attempts: 2, idleTimeoutMs: 100 } }));
    expect(e.exit).toBe(4);
    expect(e.message).toContain('no data for 100 ms');
  });

  it('an unreachable Hub → exit 4', async () => {
    const e = await failure(SINGLE, w.options({ hubUrl: 'http://127.0.0.1:1' }));
    expect(e.exit).toBe(4);
    expect(e.message).toContain(ROOT());
  });

  it.each([
    ['corrupt', fault('corrupt', WEIGHTS, Infinity)],
    ['wrong-length', fault('wrong-length', WEIGHTS, Infinity)],
  ])('bytes that never verify (%s) → exit 3, nothing left behind', async (_label, f) => {
    w.hub.faults = [f];
    const e = await failure(SINGLE);
    expect(e.exit).toBe(3);
    expect(e.code).toBe('DOWNLOAD_CORRUPT');
    await expectNoWeightsCached();
    expect((await listTree(ROOT())).filter((x) => x.endsWith('.incomplete'))).toEqual([]);
  });

  it('a transfer cut every time keeps only a named .incomplete, which the next run resumes', async () => {
    w.hub.faults = [fault('truncate', WEIGHTS, Infinity)];
    const e = await failure(SINGLE, w.options({ retry: { ...FAST_RETRY, attempts: 2 } }));
    expect(e.exit).toBe(4);
    await expectNoWeightsCached();
    const partial = await readFile(join(ROOT(), 'blobs', `${MODEL_BLOB}.incomplete`));
    expect(MODEL.subarray(0, partial.length).equals(partial)).toBe(true);

    w.hub.faults = [];
    const before = w.hub.requests.length;
    const r = await resolveModel(SINGLE, w.options());
    expect(w.hub.requests.slice(before).find((q) => WEIGHTS.test(q.path))?.range).toBe(`bytes=${partial.length}-`);
    await expectWeightsIntact(r.dir);
  });

  it('a garbage .incomplete of full length from an earlier run is replaced', async () => {
    await mkdir(join(ROOT(), 'blobs'), { recursive: true });
    await writeFile(join(ROOT(), 'blobs', `${MODEL_BLOB}.incomplete`), Buffer.alloc(MODEL.length, 7));
    const r = await resolveModel(SINGLE, w.options());
    expect(w.hub.requests.filter((q) => WEIGHTS.test(q.path)).map((q) => q.range)).toEqual([undefined]);
    await expectWeightsIntact(r.dir);
  });

  it('a complete .incomplete that was never renamed is adopted without downloading', async () => {
    await mkdir(join(ROOT(), 'blobs'), { recursive: true });
    await writeFile(join(ROOT(), 'blobs', `${MODEL_BLOB}.incomplete`), MODEL);
    const r = await resolveModel(SINGLE, w.options());
    expect(w.hub.requests.filter((q) => WEIGHTS.test(q.path))).toEqual([]);
    await expectWeightsIntact(r.dir);
  });

  it('removes private partial files of dead processes, keeps those of live ones', async () => {
    const blobs = join(ROOT(), 'blobs');
    await mkdir(blobs, { recursive: true });
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
    const dead = `${MODEL_BLOB}.incomplete.${deadPid}-0000`;
    const live = `${MODEL_BLOB}.incomplete.${process.pid}-1111`;
    await writeFile(join(blobs, dead), 'x');
    await writeFile(join(blobs, live), 'y');
    const r = await resolveModel(SINGLE, w.options());
    await expect(readFile(join(blobs, dead))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(join(blobs, live), 'utf8')).toBe('y');
    expect((await readFile(join(r.dir, 'model.safetensors'))).equals(MODEL)).toBe(true);
  });

  it('two downloads of the same model into one cache at once both succeed, leaving one intact copy', async () => {
    w.hub.faults = [fault('stall-body', WEIGHTS, 1)];
    const [a, b] = await Promise.all([resolveModel(SINGLE, w.options()), resolveModel(SINGLE, w.options())]);
    expect(a.dir).toBe(b.dir);
    await expectWeightsIntact(a.dir);
    expect((await listTree(join(ROOT(), 'blobs'))).filter((f) => f.includes('incomplete'))).toEqual([]);
  });

  it('an interrupted download → the caller\'s abort reason, no snapshot entry', async () => {
    w.hub.faults = [fault('stall-body', WEIGHTS, Infinity)];
    const controller = new AbortController();
    const progress = (m: string) => { if (m.includes('downloading model.safetensors')) setTimeout(() => controller.abort(), 50); };
    const e = await failure(SINGLE, w.options({ signal: controller.signal, progress, retry: { ...FAST_RETRY, idleTimeoutMs: 10_000 } }));
    expect(e.exit).toBe(130);
    await expectNoWeightsCached();
    expect((await listTree(ROOT())).filter((f) => f.includes('.incomplete.'))).toEqual([]);
  });
});

describe('access errors', () => {
  it('401 without a token on a private repo → exit 3, says token missing and mentions gated repos', async () => {
    const e = await failure(PRIVATE, w.options({ token: undefined }));
    expect(e.exit).toBe(3);
    expect(e.message).toMatch(/no Hugging Face token was sent/);
    expect(e.message).toMatch(/gated/);
    expect(e.message).toContain(join(w.tmp, 'hf-home', 'token'));
  });

  it('401 with an invalid token → exit 3, says rejected, never shows the token', async () => {
    const bad = 'hf_ThisTokenIsNotValidAtAll00000000';
    const e = await failure(PRIVATE, w.options({ token: bad }));
    expect(e.exit).toBe(3);
    expect(e.message).toMatch(/rejected \(invalid or expired\)/);
    expect(e.message).not.toContain(bad);
  });

  it('gated repo without a token → 401, exit 3, names the gated case', async () => {
    const e = await failure(GATED, w.options({ token: undefined }));
    expect(e.exit).toBe(3);
    expect(e.message).toContain('GatedRepo');
    expect(e.message).toContain(`${w.hub.url}/${GATED}`);
  });

  it('gated repo whose terms the account did not accept → 403, exit 3', async () => {
    const e = await failure(GATED, w.options({ token: NO_GATED_TOKEN }));
    expect(e.exit).toBe(3);
    expect(e.code).toBe('HUB_FORBIDDEN');
    expect(e.message).toMatch(/gated repo/);
  });

  it('gated repo with access works', async () => {
    expect((await resolveModel(GATED, w.options())).source).toBe('hub');
  });

  it.each([['tiny-org/no-such-model'], [`${SINGLE}@no-such-branch`]])('%s → 404, exit 3, "repo or revision not found"', async (arg) => {
    const e = await failure(arg);
    expect(e.exit).toBe(3);
    expect(e.message).toContain('repo or revision not found');
  });

  it('failures are not retried', async () => {
    await failure(PRIVATE, w.options({ token: undefined }));
    expect(w.hub.requests.length).toBe(1);
  });
});

it('refuses to start a download that cannot fit on the disk (exit 5)', async () => {
  await expect(ensureFreeSpace(w.tmp, 2 ** 62)).rejects.toMatchObject({ exit: 5, code: 'DISK_FULL' });
  await expect(ensureFreeSpace(w.tmp, 1)).resolves.toBeUndefined();
});

it('a 401 from the file endpoint after a good revision lookup is still an access error', async () => {
  w.hub.faults = [fault('status', new RegExp(`/resolve/${C_SINGLE}/config\\.json$`), Infinity, 401)];
  const e = await failure(SINGLE);
  expect(e.exit).toBe(3);
});
