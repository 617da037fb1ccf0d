/**
 * What `apex env` reports: versions (apex, Node, TensorFlow.js packages), the machine (platform,
 * CPU, memory), which tfjs backends work here and whether a GPU was found, and the Hugging Face
 * settings in effect (cache folders, endpoint, offline mode, and whether a token is present —
 * never the token itself).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, cpus, freemem, platform, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hfHomeDir, hubCacheDir } from '../io/hf-cache.js';
import { findToken, type TokenSource } from '../io/hf-token.js';
import { hubUrlFromEnv, offlineFromEnv } from '../io/resolve-model.js';
import { probeBackends, type BackendProbe } from '../model/backend.js';
import { tokenCacheDir } from '../train/token-cache.js';
import { apexBuild } from './apex-build.js';

export interface EnvInfo {
  /** The package version, and the build (util/apex-build.ts) that records carry as `version+build`. */
  apex: { version: string; build: string };
  node: { version: string; platform: string; arch: string; osRelease: string };
  cpu: { model: string; count: number };
  memory: { totalBytes: number; freeBytes: number };
  /** Installed version of each TensorFlow.js-related package; null when not installed. */
  packages: Record<string, string | null>;
  backends: BackendProbe[];
  gpu: { found: boolean; detail: string };
  huggingFace: {
    home: string;
    hubCache: string;
    tokenFile: string;
    token: { present: boolean; source: TokenSource };
    endpoint: string;
    offline: boolean;
    /** The variables as set (null when unset). */
    env: { HF_ENDPOINT: string | null; HF_HUB_OFFLINE: string | null; HF_HOME: string | null; HF_HUB_CACHE: string | null };
  };
  /** The token cache of data loading (train/token-cache.ts): its folder (null when APEX_TOKEN_CACHE turns it off), entries and bytes in it. */
  tokenCache: { dir: string | null; entries: number; bytes: number };
}

const PACKAGES = [
  '@tensorflow/tfjs',
  '@tensorflow/tfjs-core',
  '@tensorflow/tfjs-backend-wasm',
  '@tensorflow/tfjs-backend-webgpu',
  '@tensorflow/tfjs-node',
  '@tensorflow/tfjs-node-gpu',
  'webgpu',
];

const require = createRequire(import.meta.url);

export async function collectEnvInfo(env: NodeJS.ProcessEnv = process.env): Promise<EnvInfo> {
  const cores = cpus();
  const backends = await probeBackends();
  const webgpu = backends.find((b) => b.name === 'webgpu');
  const token = findToken(undefined, env);
  return {
    apex: { version: apexVersion(), build: apexBuild() },
    node: { version: process.versions.node, platform: platform(), arch: arch(), osRelease: release() },
    cpu: { model: cores[0]?.model.trim() ?? 'unknown', count: cores.length },
    memory: { totalBytes: totalmem(), freeBytes: freemem() },
    packages: Object.fromEntries(PACKAGES.map((p) => [p, packageVersion(p)])),
    backends,
    gpu: { found: webgpu?.available ?? false, detail: webgpu?.detail ?? 'webgpu backend not probed' },
    huggingFace: {
      home: hfHomeDir(env),
      hubCache: hubCacheDir(env),
      tokenFile: token.file,
      token: { present: token.token !== undefined, source: token.source },
      endpoint: hubUrlFromEnv(env),
      offline: offlineFromEnv(env),
      env: {
        HF_ENDPOINT: env.HF_ENDPOINT ?? null,
        HF_HUB_OFFLINE: env.HF_HUB_OFFLINE ?? null,
        HF_HOME: env.HF_HOME ?? null,
        HF_HUB_CACHE: env.HF_HUB_CACHE ?? null,
      },
    },
    tokenCache: await tokenCacheUsage(tokenCacheDir(env)),
  };
}

/** Entries and bytes of the token cache folder (none when it does not exist yet or cannot be read). */
async function tokenCacheUsage(dir: string | undefined): Promise<EnvInfo['tokenCache']> {
  if (dir === undefined) return { dir: null, entries: 0, bytes: 0 };
  let entries = 0;
  let bytes = 0;
  try {
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.safetensors')) continue;
      entries++;
      bytes += (await stat(join(dir, name)).catch(() => ({ size: 0 }))).size;
    }
  } catch {
    // No folder yet, or one apex cannot read: it holds nothing apex could use.
  }
  return { dir, entries, bytes };
}

/** Version of an installed package, or null when it is not installed. */
function packageVersion(name: string): string | null {
  try {
    return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version?: string }).version ?? null;
  } catch {
    return null;
  }
}

/** apex's own version, from the package.json above this module (in src/ or dist/). */
function apexVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'apex' && pkg.version) return pkg.version;
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}
