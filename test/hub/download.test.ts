/**
 * Downloading from the (fake) Hub into the cache: the Python client's layout, only the needed
 * files, the token sent as Bearer, no network on the second resolve, reuse of what is cached.
 */
import { lstat, mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { resolveModel } from '../../src/io/resolve-model.js';
import { isLfs, sha256 } from './fake-hub.js';
import { FIXTURES, shardedRepo, singleFileRepo } from './fixture-repos.js';
import { C_SHARDED, C_SINGLE, gitHashObject, listTree, makeWorld, SHARDED, SINGLE, TOKEN, type World } from './setup.js';

const NEEDED_SINGLE = ['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'];

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

function pythonEtag(name: string, bytes: Buffer): string {
  return isLfs(name) ? sha256(bytes) : gitHashObject(bytes);
}

async function expectSameTensors(dir: string): Promise<void> {
  const want = await Checkpoint.open(join(FIXTURES, 'stories260K'));
  const got = await Checkpoint.open(dir);
  try {
    expect(got.tensorNames().sort()).toEqual(want.tensorNames().sort());
    for (const name of want.tensorNames()) {
      expect(Buffer.from(await got.readBytes(name)).equals(Buffer.from(await want.readBytes(name)))).toBe(true);
    }
  } finally {
    await got.close();
    await want.close();
  }
}

describe('resolveModel from the Hub', () => {
  it('downloads only the needed files into the Python client cache layout', async () => {
    const r = await resolveModel(SINGLE, w.options());
    const root = join(w.cacheDir, 'models--tiny-org--stories-single');
    expect(r).toEqual({ dir: join(root, 'snapshots', C_SINGLE), source: 'hub', repo: SINGLE, revision: 'main', commit: C_SINGLE });
    expect(await readFile(join(root, 'refs', 'main'), 'utf8')).toBe(C_SINGLE);

    const files = singleFileRepo();
    expect(await listTree(r.dir)).toEqual(NEEDED_SINGLE);
    for (const name of NEEDED_SINGLE) {
      const pointer = join(r.dir, name);
      expect((await lstat(pointer)).isSymbolicLink()).toBe(true);
      expect(await readlink(pointer)).toBe(`../../blobs/${pythonEtag(name, files[name]!)}`);
      expect((await readFile(pointer)).equals(files[name]!)).toBe(true);
    }
    expect(await listTree(join(root, 'blobs'))).toEqual(NEEDED_SINGLE.map((n) => pythonEtag(n, files[n]!)).sort());
    expect(await listTree(root)).toEqual(
      [`refs/main`, ...NEEDED_SINGLE.map((n) => `snapshots/${C_SINGLE}/${n}`), ...NEEDED_SINGLE.map((n) => `blobs/${pythonEtag(n, files[n]!)}`)].sort(),
    );

    const paths = w.hub.requests.map((q) => q.path);
    expect(paths.filter((p) => /\.bin|\.pth|\.gguf|original\/|README|gitattributes/.test(p))).toEqual([]);
    // The token goes to the Hub only: fetch drops it on the redirect to the CDN's other origin.
    for (const q of w.hub.requests) expect(q.authorization).toBe(q.path.startsWith('/cdn/') ? undefined : `Bearer ${TOKEN}`);
    expect(w.hub.requests.filter((q) => q.path.startsWith('/cdn/')).length).toBe(1);
    await expectSameTensors(r.dir);
  });

  it('makes no request at all when the snapshot is already complete', async () => {
    await resolveModel(SINGLE, w.options());
    const before = w.hub.requests.length;
    const again = await resolveModel(SINGLE, w.options());
    expect(again.source).toBe('cache');
    expect(again.commit).toBe(C_SINGLE);
    expect(w.hub.requests.length).toBe(before);
  });

  it('downloads a sharded checkpoint: config, index and every listed shard', async () => {
    const r = await resolveModel(SHARDED, w.options());
    expect(r.commit).toBe(C_SHARDED);
    const files = shardedRepo();
    expect(await listTree(r.dir)).toEqual(
      ['config.json', 'generation_config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors',
        'model.safetensors.index.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'],
    );
    for (const name of await listTree(r.dir)) expect((await readFile(join(r.dir, name))).equals(files[name]!)).toBe(true);
    await expectSameTensors(r.dir);
    const before = w.hub.requests.length;
    expect((await resolveModel(SHARDED, w.options())).source).toBe('cache');
    expect(w.hub.requests.length).toBe(before);
  });

  it('records tags and PR refs under refs/, and a commit revision without a ref', async () => {
    const byCommit = await resolveModel(`${SINGLE}@${C_SINGLE}`, w.options());
    expect(byCommit).toMatchObject({ source: 'hub', revision: C_SINGLE, commit: C_SINGLE });
    const root = join(w.cacheDir, 'models--tiny-org--stories-single');
    expect(await listTree(join(root, 'refs'))).toEqual([]);

    // The files are there already: a new tag costs one revision lookup and no download.
    const before = w.hub.requests.length;
    const byTag = await resolveModel(`${SINGLE}@v1`, w.options());
    expect(byTag).toMatchObject({ source: 'hub', revision: 'v1', commit: C_SINGLE, dir: byCommit.dir });
    expect(w.hub.requests.slice(before).map((q) => q.path)).toEqual([`/api/models/${SINGLE}/revision/v1`]);

    await resolveModel(`${SINGLE}@refs/pr/1`, w.options());
    expect(await listTree(join(root, 'refs'))).toEqual(['refs/pr/1', 'v1']);
    expect(await readFile(join(root, 'refs', 'refs', 'pr', '1'), 'utf8')).toBe(C_SINGLE);
    expect((await resolveModel(`${SINGLE}@v1`, w.options())).source).toBe('cache');
  });

  it('falls back to HEAD requests when the revision API gives no sizes or hashes, with the same layout', async () => {
    w.hub.blobsMetadata = false;
    const r = await resolveModel(SINGLE, w.options());
    expect(w.hub.requests.filter((q) => q.method === 'HEAD').length).toBe(NEEDED_SINGLE.length);
    const files = singleFileRepo();
    for (const name of NEEDED_SINGLE) expect(await readlink(join(r.dir, name))).toBe(`../../blobs/${pythonEtag(name, files[name]!)}`);
    await expectSameTensors(r.dir);
  });

  it('refuses an etag from a HEAD answer that is not a hash, and writes nothing outside the cache', async () => {
    w.hub.blobsMetadata = false;
    w.hub.faults.push({ kind: 'path-etag', path: /\/resolve\//, method: 'HEAD', times: Infinity });
    await expect(resolveModel(SINGLE, w.options())).rejects.toMatchObject({ exit: 3, code: 'HUB_RESPONSE', message: expect.stringMatching(/etag "\.\.\/\.\.\/\.\.\/escaped-blob".*neither a sha256 nor a git sha1/) });
    expect(w.hub.requests.filter((q) => q.method === 'GET' && q.path.includes('/resolve/'))).toEqual([]);
    for (const dir of [w.cacheDir, join(w.cacheDir, '..'), join(w.cacheDir, '..', '..')]) {
      await expect(lstat(join(dir, 'escaped-blob'))).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  it('reuses a cache written by the Python client without touching the network', async () => {
    const files = singleFileRepo();
    const root = join(w.cacheDir, 'models--some-org--py-model');
    const commit = 'a'.repeat(40);
    await mkdir(join(root, 'refs'), { recursive: true });
    await writeFile(join(root, 'refs', 'main'), commit);
    await mkdir(join(root, 'blobs'), { recursive: true });
    await mkdir(join(root, 'snapshots', commit), { recursive: true });
    for (const name of ['config.json', 'model.safetensors']) {
      const etag = pythonEtag(name, files[name]!);
      await writeFile(join(root, 'blobs', etag), files[name]!);
      await symlink(`../../blobs/${etag}`, join(root, 'snapshots', commit, name));
    }
    const fetch = vi.fn<typeof globalThis.fetch>(() => Promise.reject(new Error('network used')));
    const r = await resolveModel('some-org/py-model', w.options({ fetch }));
    expect(r).toEqual({ dir: join(root, 'snapshots', commit), source: 'cache', repo: 'some-org/py-model', revision: 'main', commit });
    expect(fetch).not.toHaveBeenCalled();
  });

  it('completes a partial snapshot, reusing blobs already present', async () => {
    const r = await resolveModel(SINGLE, w.options());
    await rm(join(r.dir, 'model.safetensors'));
    await rm(join(w.cacheDir, 'models--tiny-org--stories-single', 'blobs', gitHashObject(singleFileRepo()['config.json']!)));
    await rm(join(r.dir, 'config.json'));
    const before = w.hub.requests.length;
    const again = await resolveModel(SINGLE, w.options());
    expect(again.source).toBe('hub');
    const paths = w.hub.requests.slice(before).map((q) => q.path);
    expect(paths).toEqual([`/api/models/${SINGLE}/revision/main`, `/${SINGLE}/resolve/${C_SINGLE}/config.json`]);
    await expectSameTensors(again.dir);
  });

  it('keeps stdout clean and reports progress through the callback', async () => {
    const write = vi.spyOn(process.stdout, 'write');
    try {
      await resolveModel(SINGLE, w.options());
      expect(write).not.toHaveBeenCalled();
    } finally {
      write.mockRestore();
    }
    expect(w.progress.some((l) => l.includes('downloading model.safetensors'))).toBe(true);
    expect(w.progress.join('\n')).not.toContain(TOKEN);
  });
});
