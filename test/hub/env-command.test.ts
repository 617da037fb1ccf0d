/**
 * `apex env` as a user runs it: the built CLI in a child process, `--json` checked field by
 * field against what this process can see independently, and the token never printed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SECRET = 'hf_EnvCommandSecret0123456789abcdef';
let tmp: string;

/** Builds dist/ when it is missing or older than the sources this test exercises. */
function ensureBuilt(): void {
  const built = join(ROOT, 'dist', 'commands', 'env.js');
  const sources = ['src/commands/env.ts', 'src/util/env-info.ts', 'src/io/hf-token.ts', 'src/io/hf-cache.ts', 'src/io/resolve-model.ts'];
  if (existsSync(built) && sources.every((s) => statSync(join(ROOT, s)).mtimeMs <= statSync(built).mtimeMs)) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; the check below is what matters.
  }
  expect(existsSync(built), 'dist/commands/env.js must exist: run npm run build').toBe(true);
}

function apexEnv(args: string[], env: Record<string, string>): { stdout: string; stderr: string; status: number | null } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HF_') && k !== 'XDG_CACHE_HOME'));
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'run.js'), 'env', ...args], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'apex-env-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('apex env --json reports versions, machine, backends and Hugging Face settings without the token', () => {
  const r = apexEnv(['--json'], { HF_TOKEN: SECRET, HF_HOME: join(tmp, 'home'), HF_ENDPOINT: 'http://127.0.0.1:9/', HF_HUB_OFFLINE: '1' });
  expect(r.status).toBe(0);
  expect(r.stdout + r.stderr).not.toContain(SECRET);
  const out = JSON.parse(r.stdout) as { ok: boolean; data: Record<string, any> };
  expect(out.ok).toBe(true);
  const d = out.data;
  const pkg = (p: string) => JSON.parse(readFileSync(join(ROOT, p, 'package.json'), 'utf8')).version as string;
  expect(d.apex.version).toBe(pkg('.'));
  expect(d.node).toMatchObject({ version: process.versions.node, platform: process.platform, arch: process.arch });
  expect(d.cpu.count).toBe(cpus().length);
  expect(typeof d.cpu.model).toBe('string');
  expect(d.memory.totalBytes).toBe(totalmem());
  expect(d.packages['@tensorflow/tfjs']).toBe(pkg('node_modules/@tensorflow/tfjs'));
  expect(d.packages['@tensorflow/tfjs-backend-wasm']).toBe(pkg('node_modules/@tensorflow/tfjs-backend-wasm'));
  expect(d.backends.map((b: { name: string }) => b.name)).toEqual(['webgpu', 'tensorflow', 'wasm', 'cpu']);
  expect(d.backends.find((b: { name: string }) => b.name === 'cpu').available).toBe(true);
  expect(d.gpu.found).toBe(d.backends[0].available);
  expect(d.huggingFace).toMatchObject({
    home: join(tmp, 'home'),
    hubCache: join(tmp, 'home', 'hub'),
    tokenFile: join(tmp, 'home', 'token'),
    token: { present: true, source: 'HF_TOKEN' },
    endpoint: 'http://127.0.0.1:9',
    offline: true,
    env: { HF_ENDPOINT: 'http://127.0.0.1:9/', HF_HUB_OFFLINE: '1', HF_HOME: join(tmp, 'home'), HF_HUB_CACHE: null },
  });
});

it('apex env (human) reads the token file, says where it came from and never prints it', () => {
  const home = join(tmp, 'home2');
  execFileSync('mkdir', ['-p', home]);
  writeFileSync(join(home, 'token'), `${SECRET}\n`);
  const r = apexEnv([], { HF_HOME: home, HF_HUB_CACHE: join(tmp, 'cache') });
  expect(r.status).toBe(0);
  expect(r.stdout + r.stderr).not.toContain(SECRET);
  expect(r.stdout).toContain(`token: present (from ${join(home, 'token')})`);
  expect(r.stdout).toContain(`hub cache ${join(tmp, 'cache')}`);
  expect(r.stdout).toMatch(/offline: no/);
});

it('apex env reports the token cache: its folder, the entries and bytes in it, or off', () => {
  const cache = join(tmp, 'apex-cache');
  execFileSync('mkdir', ['-p', join(cache, 'tokens')]);
  writeFileSync(join(cache, 'tokens', 'a.safetensors'), Buffer.alloc(1000));
  writeFileSync(join(cache, 'tokens', 'b.safetensors'), Buffer.alloc(24));
  writeFileSync(join(cache, 'tokens', '.b.safetensors.tmp-1-ab'), Buffer.alloc(5)); // a writer's temporary is no entry
  const on = apexEnv(['--json'], { APEX_CACHE_DIR: cache, APEX_TOKEN_CACHE: '1' });
  expect(JSON.parse(on.stdout).data.tokenCache).toEqual({ dir: join(cache, 'tokens'), entries: 2, bytes: 1024 });
  const human = apexEnv([], { APEX_CACHE_DIR: cache, APEX_TOKEN_CACHE: '1' });
  expect(human.stdout).toContain(`token cache: ${join(cache, 'tokens')} (2 files, 1.02 kB;`);
  const off = apexEnv(['--json'], { APEX_CACHE_DIR: cache, APEX_TOKEN_CACHE: 'off' });
  expect(JSON.parse(off.stdout).data.tokenCache).toEqual({ dir: null, entries: 0, bytes: 0 });
  const fresh = apexEnv(['--json'], { APEX_CACHE_DIR: join(tmp, 'none-yet'), APEX_TOKEN_CACHE: '1' });
  expect(JSON.parse(fresh.stdout).data.tokenCache).toEqual({ dir: join(tmp, 'none-yet', 'tokens'), entries: 0, bytes: 0 });
});
