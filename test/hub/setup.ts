/**
 * Per-test world for the resolver tests: a temporary HF_HOME, the HF_* variables of the real
 * environment cleared (so the developer's own token or cache never leaks in), a fake Hub with
 * the fixture repos, and helpers to inspect the cache.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Checkpoint } from '../../src/io/checkpoint.js';
import type { ResolveOptions } from '../../src/io/resolve-model.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { modelRecord } from '../../src/pipeline/analysis-provenance.js';
import { FakeHub } from './fake-hub.js';
import { commitHash, shardedRepo, singleFileRepo } from './fixture-repos.js';

export const TOKEN = 'hf_FakeTokenForTests0123456789abcd';
export const NO_GATED_TOKEN = 'hf_OtherTokenWithoutGatedAccess987';
export const SINGLE = 'tiny-org/stories-single';
export const SHARDED = 'tiny-org/stories-sharded';
export const PRIVATE = 'tiny-org/private-model';
export const GATED = 'tiny-org/gated-model';
export const C_SINGLE = commitHash('single');
export const C_SHARDED = commitHash('sharded');
export const C_PRIVATE = commitHash('private');
export const C_GATED = commitHash('gated');

/** Tiny delays so retries cost milliseconds. */
export const FAST_RETRY = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5, idleTimeoutMs: 300 };

const HF_VARS = ['HF_TOKEN', 'HF_TOKEN_PATH', 'HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME'];

export interface World {
  tmp: string;
  hub: FakeHub;
  cacheDir: string;
  progress: string[];
  /** Options pointing at the fake Hub with the valid token. */
  options(extra?: ResolveOptions): ResolveOptions;
  dispose(): Promise<void>;
}

export async function makeWorld(): Promise<World> {
  const saved = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
  for (const k of HF_VARS) delete process.env[k];
  const tmp = await mkdtemp(join(tmpdir(), 'apex-hub-'));
  process.env.HF_HOME = join(tmp, 'hf-home');
  const hub = await new FakeHub([
    { id: SINGLE, refs: { main: C_SINGLE, v1: C_SINGLE, 'refs/pr/1': C_SINGLE }, commits: { [C_SINGLE]: singleFileRepo() } },
    { id: SHARDED, refs: { main: C_SHARDED }, commits: { [C_SHARDED]: shardedRepo() } },
    { id: PRIVATE, refs: { main: C_PRIVATE }, commits: { [C_PRIVATE]: singleFileRepo() }, private: true },
    { id: GATED, refs: { main: C_GATED }, commits: { [C_GATED]: singleFileRepo() }, gated: true },
  ]).start();
  hub.tokens.set(TOKEN, { gatedAccess: true });
  hub.tokens.set(NO_GATED_TOKEN, { gatedAccess: false });
  const cacheDir = join(tmp, 'cache');
  const progress: string[] = [];
  return {
    tmp,
    hub,
    cacheDir,
    progress,
    options: (extra = {}) => ({ cacheDir, hubUrl: hub.url, token: TOKEN, retry: FAST_RETRY, progress: (m) => progress.push(m), ...extra }),
    dispose: async () => {
      await hub.close();
      await rm(tmp, { recursive: true, force: true });
      for (const k of HF_VARS) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    },
  };
}

/** The blob name the Python client would use for `bytes`: `git hash-object` for regular files. */
export function gitHashObject(bytes: Buffer): string {
  return execFileSync('git', ['hash-object', '--stdin'], { input: bytes }).toString().trim();
}

/** Every file under `dir`, relative, sorted ('' when dir is missing). */
export async function listTree(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => !e.isDirectory())
      .map((e) => relative(dir, join(e.parentPath, e.name)))
      .sort();
  } catch {
    return [];
  }
}

/** What a model's provenance records of its weight files (name, bytes, sha256): a header-only checkpoint's must equal the downloaded one's. */
export async function fingerprintOf(dir: string, options: Parameters<typeof Checkpoint.open>[1] = {}) {
  const ck = await Checkpoint.open(dir, options);
  try {
    return (await modelRecord(ck, describeCheckpoint(ck).spec)).files.map(({ file, bytes, sha256 }) => ({ file, bytes, sha256 }));
  } finally {
    await ck.close();
  }
}
