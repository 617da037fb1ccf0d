/**
 * How a model argument is read: an existing folder wins, a path that does not exist is an input
 * error naming it, otherwise `org/name[@revision]` with the Python client's repo id rules.
 */
import { mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseRepoArgument, resolveModel } from '../../src/io/resolve-model.js';
import { FIXTURES } from './fixture-repos.js';
import { makeWorld, type World } from './setup.js';

let w: World;
beforeEach(async () => { w = await makeWorld(); });
afterEach(async () => { await w.dispose(); });

const noNetwork = () => vi.fn<typeof globalThis.fetch>(() => Promise.reject(new Error('network used')));

describe('local folders', () => {
  it('an existing folder wins, absolute or relative', async () => {
    const dir = join(FIXTURES, 'stories260K');
    expect(await resolveModel(dir)).toEqual({ dir, source: 'local' });
    expect(await resolveModel(`./${relative(process.cwd(), dir)}`)).toEqual({ dir, source: 'local' });
  });

  it('a local org/name folder wins over the Hub repo of that name', async () => {
    const cwd = process.cwd();
    await mkdir(join(w.tmp, 'tiny-org', 'stories-single'), { recursive: true });
    process.chdir(w.tmp);
    try {
      const fetch = noNetwork();
      expect(await resolveModel('tiny-org/stories-single', w.options({ fetch }))).toEqual({ dir: join(w.tmp, 'tiny-org', 'stories-single'), source: 'local' });
      expect(fetch).not.toHaveBeenCalled();
    } finally {
      process.chdir(cwd);
    }
  });

  it.each(['./no-such-folder', '../no-such-folder', '/no/such/folder', '~/no-such-apex-folder'])('%s → exit 3 naming it', async (arg) => {
    const fetch = noNetwork();
    await expect(resolveModel(arg, w.options({ fetch }))).rejects.toMatchObject({ exit: 3, message: expect.stringContaining(arg) });
    expect(fetch).not.toHaveBeenCalled();
  });

  it('an id-shaped argument whose first part is a folder here is a mistyped path: exit 3 at once, with the closest name', async () => {
    const cwd = process.cwd();
    await mkdir(join(w.tmp, 'models', 'llama-mha-f32'), { recursive: true });
    process.chdir(w.tmp);
    try {
      const fetch = noNetwork();
      await expect(resolveModel('models/llama-mha-f33', w.options({ fetch }))).rejects.toMatchObject({
        exit: 3,
        code: 'NOT_FOUND',
        message: expect.stringMatching(/^models\/llama-mha-f33: no such model folder \(.*ENOENT\) \(did you mean .*models\/llama-mha-f32\?\)$/),
      });
      expect(fetch).not.toHaveBeenCalled();
    } finally {
      process.chdir(cwd);
    }
  });

  it('an id-shaped argument whose first part is mistyped too: known to be no repo only once the Hub fails, which then names the closest folder here', async () => {
    const cwd = process.cwd();
    await mkdir(join(w.tmp, 'models', 'llama-mha-f32'), { recursive: true });
    process.chdir(w.tmp);
    try {
      const hint = '(nor a folder here; did you mean models/llama-mha-f32?)';
      // Offline, unreachable Hub, and a Hub that has no such repo.
      await expect(resolveModel('modelz/llama-mha-f32', w.options({ fetch: noNetwork(), offline: true }))).rejects.toMatchObject({ exit: 4, message: expect.stringContaining(hint) });
      await expect(resolveModel('modelz/llama-mha-f32', w.options({ fetch: noNetwork() }))).rejects.toMatchObject({ exit: 4, message: expect.stringContaining(hint) });
      const notFound = vi.fn<typeof globalThis.fetch>(() => Promise.resolve(new Response('{"error":"Repository not found"}', { status: 404 })));
      await expect(resolveModel('modelz/llama-mha-f33', w.options({ fetch: notFound }))).rejects.toMatchObject({ code: 'HUB_NOT_FOUND', message: expect.stringContaining(hint) });
      // The Hub answers an anonymous request for a repo that does not exist with 401 RepoNotFound (the fake Hub as the real one).
      await expect(resolveModel('modelz/llama-mha-f32', w.options({ token: undefined }))).rejects.toMatchObject({ code: 'HUB_UNAUTHORIZED', message: expect.stringContaining(hint) });
      // Nothing close: the messages are as before.
      await expect(resolveModel('other-org/some-model', w.options({ fetch: noNetwork(), offline: true }))).rejects.toMatchObject({ message: expect.not.stringContaining('did you mean') });
    } finally {
      process.chdir(cwd);
    }
  });

  it('a file instead of a folder → exit 3', async () => {
    await expect(resolveModel(join(FIXTURES, 'stories260K', 'config.json'))).rejects.toMatchObject({ exit: 3, code: 'NOT_A_FOLDER' });
  });
});

describe('repo ids', () => {
  it('org/name[@revision], revision defaulting to main', () => {
    expect(parseRepoArgument('meta-llama/Llama-3.2-1B')).toEqual({ repo: 'meta-llama/Llama-3.2-1B', revision: 'main' });
    expect(parseRepoArgument('org/name@v1.0')).toEqual({ repo: 'org/name', revision: 'v1.0' });
    expect(parseRepoArgument('org/name@refs/pr/12')).toEqual({ repo: 'org/name', revision: 'refs/pr/12' });
    expect(parseRepoArgument('TinyLlama/TinyLlama_v1.1')).toEqual({ repo: 'TinyLlama/TinyLlama_v1.1', revision: 'main' });
  });

  it.each(['bare-name', 'a/b/c', 'org/-name', 'org/na--me', 'org/na..me', 'org/name@', 'org/name@../../etc', 'org/name@a//b', 'org/na me'])(
    '%s → exit 3 without network',
    async (arg) => {
      const fetch = noNetwork();
      await expect(resolveModel(arg, w.options({ fetch }))).rejects.toMatchObject({ exit: 3, message: expect.stringContaining('org/name[@revision]') });
      expect(fetch).not.toHaveBeenCalled();
    },
  );
});
