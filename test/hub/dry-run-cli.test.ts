/**
 * `apex finetune <hub-repo> --dry-run` and `apex run --dry-run` with a Hub model, as a user runs
 * them (the built CLI against the fake Hub): uncached, they read the weight files' headers with
 * Range requests only, leave no weight blob in the cache, say what they did not download, and
 * print the same plan as the same dry runs once the model is cached (when they say nothing more).
 */
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { formatBytes } from '../../src/io/hub-download.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { apexInProcess, ensureBuilt, workspace, type CliResult } from '../reliability/cli.js';
import { FakeHub, sha256 } from './fake-hub.js';
import { commitHash, shardedRepo } from './fixture-repos.js';

const REPO = 'tiny-org/stories-sharded';
const ws = workspace('hub-dry-run');
const home = join(ws, 'hf-home');
const ids = join(ws, 'ids.safetensors');
const config = join(ws, 'run.yaml');
const files = shardedRepo();
const shards = Object.keys(files).filter((f) => f.endsWith('.safetensors')).sort();
const weightBytes = shards.reduce((n, f) => n + files[f]!.length, 0);

const finetune = (...extra: string[]) => ['finetune', REPO, '--input-ids', ids, '--seq-len', '16', '--batch-size', '2', '--steps', '2', '-o', join(ws, 'ft'), '--backend', 'cpu', '--dry-run', ...extra];
const run = (...extra: string[]) => ['run', config, '-o', join(ws, 'run'), '--dry-run', ...extra];
const CASES = [finetune(), finetune('--json'), run(), run('--json')];

let hub: FakeHub;
let uncached: CliResult[];
let cached: CliResult[];
let uncachedRequests: FakeHub['requests'];
let cacheAfterDryRuns: string[];

function cases(list: string[][]) {
  return list.map((args) => ({ args, cwd: ws, home, env: { HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: undefined } }));
}

beforeAll(async () => {
  await ensureBuilt(['finetune', 'run', 'inspect']);
  hub = await new FakeHub([{ id: REPO, refs: { main: commitHash('sharded') }, commits: { [commitHash('sharded')]: files } }]).start();
  // Token ids within stories260K's vocabulary (512): 6 sequences of 16.
  await writeSafetensors(ids, [i32Tensor('input_ids', [6, 16], Int32Array.from({ length: 96 }, (_, k) => 1 + ((k * 37) % 500)))]);
  writeFileSync(config, `model: ${REPO}\nbackend: cpu\ndata: { train_input_ids: ${ids}, seq_len: 16, eval_samples: 2, calibration_samples: 4 }\nstages: { count: 2, steps: 2 }\noptimizer: { batch_size: 2 }\n`);
  uncached = await apexInProcess(cases(CASES), ws);
  uncachedRequests = [...hub.requests];
  cacheAfterDryRuns = readdirSync(join(home, 'hub'), { recursive: true }) as string[];
  // The model downloaded (inspect), then the same dry runs again.
  cached = await apexInProcess(cases([['inspect', REPO], ...CASES]), ws);
  cached = cached.slice(1);
}, 300_000);
afterAll(async () => { await hub?.close(); });

it('every dry run succeeds, uncached and cached', () => {
  [...uncached, ...cached].forEach((r, i) => expect(r.status, `${i}: ${r.stdout.slice(-600)}${r.stderr.slice(-1500)}`).toBe(0));
});

it('uncached: weight files are read by ranged GETs only, and the cache holds no weight file afterwards', () => {
  const weightGets = uncachedRequests.filter((q) => q.path.endsWith('.safetensors') && q.method === 'GET');
  expect(weightGets.length).toBeGreaterThan(0);
  for (const q of weightGets) expect(q.range, q.path).toMatch(/^bytes=\d+-\d+$/);
  for (const f of shards) expect(cacheAfterDryRuns.some((p) => p.endsWith(sha256(files[f]!)) || p.endsWith(f))).toBe(false);
  expect(cacheAfterDryRuns.some((p) => p.endsWith('tokenizer.json'))).toBe(true);
});

it('uncached, the dry runs say what they did not download; otherwise they print what the cached ones print', () => {
  const said = `dry run: read the headers of 2 weight files of ${REPO}@main from the Hub (`;
  for (const i of [0, 2]) {
    const lines = uncached[i]!.stdout.split('\n');
    const extra = lines.filter((l) => l.startsWith(said));
    expect(extra, uncached[i]!.stdout).toHaveLength(1);
    expect(extra[0]).toMatch(new RegExp(`\\(\\d+\\.\\d kB\\); ${formatBytes(weightBytes)} not downloaded \\(the run downloads them\\)$`));
    expect(lines.filter((l) => !l.startsWith(said)).join('\n')).toBe(cached[i]!.stdout);
    expect(cached[i]!.stdout).toMatch(/trainable parameters: [\d,]+ of [\d,]+/);
    expect(cached[i]!.stdout).toMatch(/memory estimate/);
  }
});

it('--json: the same plan, with what the run would download (null once cached)', () => {
  const ft = uncached[1]!.json!.data as { plan: Record<string, unknown> };
  const ftCached = cached[1]!.json!.data as { plan: Record<string, unknown> };
  const download = { repo: REPO, revision: 'main', commit: commitHash('sharded'), files: shards.map((f) => ({ file: f, bytes: files[f]!.length })), bytes: weightBytes, headerBytes: expect.any(Number) };
  expect(ft.plan.download).toEqual(download);
  expect(ftCached.plan.download).toBeNull();
  expect({ ...ft, plan: { ...ft.plan, download: null } }).toEqual(ftCached);

  const rp = uncached[3]!.json!.data as { model: Record<string, unknown> };
  const rpCached = cached[3]!.json!.data as { model: Record<string, unknown> };
  expect(rp.model.download).toEqual(download);
  expect(rpCached.model.download).toBeNull();
  expect({ ...rp, model: { ...rp.model, download: null } }).toEqual(rpCached);
  expect((rp.model.download as { headerBytes: number }).headerBytes).toBeLessThan(weightBytes / 10);
});

it('the weights\' fingerprint is the Hub\'s sha256: a dry run of stage 1 with the analysis of the downloaded model, the model no longer cached, reuses that analysis', async () => {
  const out = join(ws, 'ft-real');
  const args = ['finetune', REPO, '--input-ids', ids, '--seq-len', '16', '--batch-size', '2', '--steps', '1', '--calibration-samples', '2', '-o', out, '--backend', 'cpu', '--no-expand'];
  const [real] = await apexInProcess(cases([args]), ws);
  expect(real!.status, real!.stderr.slice(-1500)).toBe(0);
  // The stage gone (its analysis kept), the model gone from the cache.
  rmSync(join(out, 'stages'), { recursive: true });
  rmSync(join(home, 'hub'), { recursive: true });
  const before = hub.requests.length;
  const [dry] = await apexInProcess(cases([[...args, '--dry-run', '--json']]), ws);
  expect(dry!.status, `${dry!.stdout.slice(-600)}${dry!.stderr.slice(-1500)}`).toBe(0);
  const plan = (dry!.json!.data as { plan: { analysisSequences: number | null; download: { bytes: number } | null } }).plan;
  expect(plan.analysisSequences).toBeNull(); // an ANALYSIS_MISMATCH (exit 2) had the fingerprints differed
  expect(plan.download?.bytes).toBe(weightBytes);
  for (const q of hub.requests.slice(before).filter((r) => r.path.endsWith('.safetensors') && r.method === 'GET')) expect(q.range).toMatch(/^bytes=\d+-\d+$/);
}, 300_000);

it('apex expand --dry-run of a stage whose base model is no longer cached reads the weights\' headers only, and plans what the cached model gives', async () => {
  const out = join(ws, 'ft-expand');
  const train = ['finetune', REPO, '--input-ids', ids, '--seq-len', '16', '--batch-size', '2', '--steps', '1', '--calibration-samples', '2', '--setting', 'operators', '-o', out, '--backend', 'cpu', '--no-expand'];
  const expand = ['expand', '--run', out, '--stage', '1', '--dry-run', '--json'];
  const [trained, cachedPlan] = await apexInProcess(cases([train, expand]), ws);
  expect(trained!.status, trained!.stderr.slice(-1500)).toBe(0);
  expect(cachedPlan!.status, cachedPlan!.stderr.slice(-1500)).toBe(0);
  rmSync(join(home, 'hub'), { recursive: true });
  const before = hub.requests.length;
  const [dry] = await apexInProcess(cases([expand]), ws);
  expect(dry!.status, `${dry!.stdout.slice(-600)}${dry!.stderr.slice(-1500)}`).toBe(0);
  const weightGets = hub.requests.slice(before).filter((r) => r.path.endsWith('.safetensors') && r.method === 'GET');
  expect(weightGets.length).toBeGreaterThan(0);
  for (const q of weightGets) expect(q.range, q.path).toMatch(/^bytes=\d+-\d+$/);
  type Planned = { model: { download: { bytes: number } | null; dir: string }; tensors: unknown; layers: unknown; globals: unknown; memory: { totalBytes: number } };
  const uncached = dry!.json!.data as Planned;
  const cached = cachedPlan!.json!.data as Planned;
  expect(uncached.model.download?.bytes).toBe(weightBytes);
  expect(cached.model.download).toBeNull();
  expect([uncached.tensors, uncached.layers, uncached.globals, uncached.memory.totalBytes]).toEqual([cached.tensors, cached.layers, cached.globals, cached.memory.totalBytes]);
}, 300_000);
