/**
 * The Python client's environment variables, honoured when ResolveOptions leaves them unset:
 * HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_TOKEN_PATH and HF_HUB_OFFLINE.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hfHomeDir, hubCacheDir } from '../../src/io/hf-cache.js';
import { findToken, tokenFilePath } from '../../src/io/hf-token.js';
import { hubUrlFromEnv, offlineFromEnv, resolveModel, type ResolveOptions } from '../../src/io/resolve-model.js';
import { redact } from '../../src/util/secrets.js';
import { C_SINGLE, FAST_RETRY, makeWorld, PRIVATE, SINGLE, TOKEN, type World } from './setup.js';

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

/** Only test knobs; everything else comes from the environment. */
const bare: ResolveOptions = { retry: FAST_RETRY };

describe('environment variables', () => {
  it('HF_ENDPOINT, HF_HOME (cache in $HF_HOME/hub, token from $HF_HOME/token)', async () => {
    process.env.HF_ENDPOINT = `${w.hub.url}/`;
    process.env.HF_HOME = join(w.tmp, 'home');
    await mkdir(process.env.HF_HOME, { recursive: true });
    await writeFile(join(process.env.HF_HOME, 'token'), `  ${TOKEN}\n`);
    const r = await resolveModel(PRIVATE, bare);
    expect(r.dir.startsWith(join(w.tmp, 'home', 'hub', 'models--tiny-org--private-model', 'snapshots'))).toBe(true);
    expect(new Set(w.hub.requests.filter((q) => !q.path.startsWith('/cdn/')).map((q) => q.authorization))).toEqual(new Set([`Bearer ${TOKEN}`]));
  });

  it('HF_HUB_CACHE wins over HF_HOME', async () => {
    process.env.HF_ENDPOINT = w.hub.url;
    process.env.HF_HUB_CACHE = join(w.tmp, 'elsewhere');
    const r = await resolveModel(SINGLE, bare);
    expect(r.dir).toBe(join(w.tmp, 'elsewhere', 'models--tiny-org--stories-single', 'snapshots', C_SINGLE));
  });

  it('HF_TOKEN wins over the token file; HF_TOKEN_PATH moves the file', async () => {
    process.env.HF_ENDPOINT = w.hub.url;
    const file = join(w.tmp, 'my-token');
    await writeFile(file, 'hf_StaleTokenInTheFile000000000000\n');
    process.env.HF_TOKEN_PATH = file;
    expect(findToken()).toMatchObject({ token: 'hf_StaleTokenInTheFile000000000000', source: 'file', file });
    process.env.HF_TOKEN = TOKEN;
    expect(findToken()).toMatchObject({ token: TOKEN, source: 'HF_TOKEN' });
    await resolveModel(PRIVATE, bare);
    expect(w.hub.requests[0]!.authorization).toBe(`Bearer ${TOKEN}`);
    expect(redact(`token ${TOKEN} here`)).not.toContain(TOKEN);
  });

  it('no token anywhere → no Authorization header', async () => {
    process.env.HF_ENDPOINT = w.hub.url;
    await resolveModel(SINGLE, bare);
    expect(w.hub.requests.every((q) => q.authorization === undefined)).toBe(true);
    expect(findToken().source).toBe('none');
  });

  it('HF_HUB_OFFLINE=1 and a cache miss → exit 4 naming repo, revision and cache folder, no request', async () => {
    process.env.HF_ENDPOINT = w.hub.url;
    process.env.HF_HUB_OFFLINE = '1';
    const cache = join(w.tmp, 'hf-home', 'hub', 'models--tiny-org--stories-single');
    await expect(resolveModel(`${SINGLE}@v1`, bare)).rejects.toMatchObject({
      exit: 4,
      code: 'OFFLINE_CACHE_MISS',
      message: expect.stringMatching(new RegExp(`${SINGLE}@v1.*${cache}.*HF_HUB_OFFLINE=1`)),
    });
    expect(w.hub.requests).toEqual([]);
  });

  it('HF_HUB_OFFLINE=1 with a complete cache works without the network', async () => {
    process.env.HF_ENDPOINT = w.hub.url;
    await resolveModel(SINGLE, bare);
    const before = w.hub.requests.length;
    process.env.HF_HUB_OFFLINE = 'true';
    expect((await resolveModel(SINGLE, bare)).source).toBe('cache');
    expect(w.hub.requests.length).toBe(before);
  });

  it('defaults match the Python client', () => {
    const env = {};
    expect(hfHomeDir(env)).toBe(join(homedir(), '.cache', 'huggingface'));
    expect(hubCacheDir(env)).toBe(join(homedir(), '.cache', 'huggingface', 'hub'));
    expect(hubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(hubCacheDir({ HF_HOME: '~/hf' })).toBe(join(homedir(), 'hf', 'hub'));
    expect(tokenFilePath({ HF_HOME: '/h' })).toBe('/h/token');
    expect(hubUrlFromEnv(env)).toBe('https://huggingface.co');
    expect(offlineFromEnv(env)).toBe(false);
    expect(['1', 'ON', 'yes', 'True'].map((v) => offlineFromEnv({ HF_HUB_OFFLINE: v }))).toEqual([true, true, true, true]);
    expect(['0', 'false', ''].map((v) => offlineFromEnv({ HF_HUB_OFFLINE: v }))).toEqual([false, false, false]);
  });
});
