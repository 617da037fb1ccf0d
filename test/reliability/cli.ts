/**
 * Shared by the reliability tests: the built CLI (`node bin/run.js`) in child processes with a
 * private HF_HOME and no network, a snapshot of every file under a folder (to show a failed
 * command wrote nothing), and a fresh workspace per test file.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect } from 'vitest';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'run.js');
export const LLAMA = join(ROOT, 'fixtures', 'llama-mha-f32');
export const STORIES = join(ROOT, 'fixtures', 'stories260K');

export interface ErrorEnvelope {
  ok: false;
  error: { code: string; message: string; exit: number };
}

export interface CliResult {
  /** Exit status, or null when killed by a signal. */
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON when it is one JSON document. */
  json?: { ok: boolean; data?: Record<string, unknown>; warnings?: string[]; error?: ErrorEnvelope['error'] };
}

export interface CliOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  /** Node options before bin/run.js, e.g. `--import` of a test's preload module. */
  nodeArgs?: string[];
}

/** A fresh temporary folder, removed after the test file. */
export function workspace(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `apex-rel-${prefix}-`));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The environment every child gets: offline, a private (empty) HF cache, CI-style progress. */
export function childEnv(home: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CI: '1', HF_HUB_OFFLINE: '1', HF_HOME: home, HF_TOKEN: undefined, HF_HUB_CACHE: undefined, ...extra };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
}

/** Runs `apex <args>` to completion. */
export function apex(args: string[], options: CliOptions & { home: string }): Promise<CliResult> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [...(options.nodeArgs ?? []), BIN, ...args],
      { cwd: options.cwd ?? ROOT, env: childEnv(options.home, options.env), timeout: options.timeoutMs ?? 240_000, maxBuffer: 64 * 2 ** 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        const status = e ? (typeof e.code === 'number' ? e.code : null) : 0;
        done({ status, signal: e?.signal ?? null, stdout, stderr, ...parseJson(stdout) });
      },
    );
  });
}

function parseJson(stdout: string): { json?: CliResult['json'] } {
  try {
    return stdout.trim() ? { json: JSON.parse(stdout) as CliResult['json'] } : {};
  } catch {
    return {};
  }
}

export interface InProcessCase {
  args: string[];
  cwd: string;
  /** Extra environment for this case (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  home: string;
}

/**
 * Runs every case in order inside one child process (in-process-driver.ts): same CLI code
 * path as bin/run.js minus the process start, for matrices of quick failures.
 */
export function apexInProcess(cases: readonly InProcessCase[], scratch: string, timeoutMs = 300_000): Promise<CliResult[]> {
  const casesFile = join(scratch, `driver-cases-${process.pid}-${Date.now()}.json`);
  const resultsFile = `${casesFile}.results`;
  const base = childEnv(join(scratch, 'driver-hf-home'));
  const payload = cases.map((c) => {
    const env: Record<string, string | null> = {};
    for (const [k, v] of Object.entries({ HF_HOME: c.home, ...c.env })) env[k] = v ?? null;
    return { args: c.args, cwd: c.cwd, env };
  });
  writeFileSync(casesFile, JSON.stringify(payload));
  return new Promise((done, fail) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'test', 'reliability', 'in-process-driver.ts'), casesFile, resultsFile], { cwd: ROOT, env: base, timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      rmSync(casesFile, { force: true });
      if (err) return fail(new Error(`in-process driver failed: ${err.message}\n${stdout}${stderr}`));
      const raw = JSON.parse(readFileSync(resultsFile, 'utf8')) as { status: number; stdout: string; stderr: string }[];
      rmSync(resultsFile, { force: true });
      done(raw.map((r) => ({ status: r.status, signal: null, stdout: r.stdout, stderr: r.stderr, ...parseJson(r.stdout) })));
    });
  });
}

/** Starts `apex <args>` and returns the child, for tests that kill it or race it. */
export function startApex(args: string[], options: CliOptions & { home: string }) {
  return spawn(process.execPath, [...(options.nodeArgs ?? []), BIN, ...args], { cwd: options.cwd ?? ROOT, env: childEnv(options.home, options.env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Every file and folder under `dir` (relative paths, folders with a trailing slash), sorted. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        walk(join(d, e.name), r);
      } else out.push(r);
    }
  };
  if (existsSync(dir)) walk(dir, '');
  return out.sort();
}

/** Runs `tasks` with at most `limit` in flight; results in input order. */
export async function pooled<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/**
 * Checks that dist/ holds the built commands; builds when it is missing or older than a source
 * file (another helper may be mid-edit: a failed build is retried a few times, and type errors
 * elsewhere still emit JavaScript).
 */
export async function ensureBuilt(commands: string[]): Promise<void> {
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  const built = commands.map((c) => join(ROOT, 'dist', 'commands', `${c}.js`));
  const fresh = () => built.every((f) => existsSync(f)) && newest(join(ROOT, 'src')) <= Math.min(...built.map((f) => statSync(f).mtimeMs));
  for (let attempt = 0; attempt < 3 && !fresh(); attempt++) {
    await new Promise<void>((done) => {
      execFile(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { cwd: ROOT }, () => done());
    });
    if (fresh()) break;
    await new Promise((r) => setTimeout(r, 5_000));
  }
  for (const f of built) expect(existsSync(f), `${f} must exist: run npm run build`).toBe(true);
}
