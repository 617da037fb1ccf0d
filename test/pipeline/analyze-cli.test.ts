/**
 * `apex analyze` as a user runs it: the built CLI in a child process. --json output and
 * --dump-stats against the reference statistics, and the exit codes of the ways it refuses
 * (with nothing written).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { loadReference, maxRelDiff, type Reference } from '../model/helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let tmp: string;
let ids: string;
let ref: Reference;

/** Builds dist/ when it is missing or older than the sources this test exercises. */
function ensureBuilt(): void {
  const built = join(ROOT, 'dist', 'commands', 'analyze.js');
  const sources = ['src/commands/analyze.ts', 'src/pipeline/analyze.ts', 'src/pipeline/activation-stats.ts', 'src/pipeline/analysis-json.ts', 'src/pipeline/analysis-report.ts', 'src/pipeline/analysis-selection.ts', 'src/pipeline/analysis-memory.ts'];
  if (existsSync(built) && sources.every((s) => statSync(join(ROOT, s)).mtimeMs <= statSync(built).mtimeMs)) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; the check below is what matters.
  }
  expect(existsSync(built), 'dist/commands/analyze.js must exist: run npm run build').toBe(true);
}

function apex(args: string[]): Promise<{ stdout: string; stderr: string; status: number }> {
  return new Promise((done) => {
    execFile(process.execPath, [join(ROOT, 'bin', 'run.js'), 'analyze', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 90_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } }, (err, stdout, stderr) => {
      done({ stdout, stderr, status: err ? Number((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

beforeAll(async () => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'apex-analyze-cli-'));
  ref = await loadReference('llama-mha-f32');
  ids = join(tmp, 'ids.safetensors');
  const flat = new Int32Array(ref.B * ref.T);
  ref.sequences.forEach((s, b) => flat.set(s, b * ref.T));
  await writeSafetensors(ids, [i32Tensor('input_ids', [ref.B, ref.T], flat)]);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('--json with --input-ids and --dump-stats reproduces the reference statistics', async () => {
  const out = join(tmp, 'analysis');
  const dump = join(tmp, 'dump.safetensors');
  const r = await apex(['fixtures/llama-mha-f32', '--input-ids', ids, '--batch-size', '4', '--backend', 'wasm', '--dump-stats', dump, '-o', out, '--json']);
  expect(r.status, r.stderr).toBe(0);
  const json = JSON.parse(r.stdout) as { ok: boolean; data: { output: string; microBatches: number; layers: { heads: { k: number; P: number[]; N: number[] } }[] } };
  expect(json.ok).toBe(true);
  expect(json.data.output).toBe(out);
  expect(json.data.microBatches).toBe(2);
  expect(json.data.layers).toHaveLength(4);
  expect(json.data.layers.every((l) => l.heads.k === 1 && l.heads.P.length === 1 && l.heads.N.length === 1)).toBe(true);
  expect(r.stderr).toContain('memory estimate');
  expect(r.stderr).toMatch(/layer\s+P heads\s+N heads/); // the summary table goes to stderr with --json
  const f = await SafetensorsFile.open(dump);
  try {
    expect(maxRelDiff(await f.readFloat32('head_sumsq'), ref.headSumsq)).toBeLessThanOrEqual(1e-4);
    expect(maxRelDiff(await f.readFloat32('gate_act_sumsq'), ref.gateSumsq)).toBeLessThanOrEqual(1e-4);
  } finally {
    await f.close();
  }
  const analysis = JSON.parse(readFileSync(join(out, 'analysis.json'), 'utf8')) as { schema: string };
  expect(analysis.schema).toBe('apex.analysis/1');

  const again = await apex(['fixtures/llama-mha-f32', '--input-ids', ids, '-o', out]);
  expect(again.status).toBe(2);
  expect(again.stderr).toContain('--force');
});

it('refuses with the documented exit codes and writes nothing', async () => {
  const out = join(tmp, 'refused');
  const dump = join(tmp, 'refused-dump.safetensors');
  const cases: [string[], number][] = [
    [['./no-such-model', '--input-ids', ids], 3],
    [['fixtures/stories260K'], 2], // no tokenizer and no --input-ids
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--base', 'fixtures/llama-mha-f32'], 2], // --base without --erank
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--stage', '2'], 2], // --stage without --decay-k
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--data', 'fixtures/corpus'], 2],
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--ratio', '1.5'], 2],
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--score', 'max'], 2],
    [['fixtures/llama-mha-f32', '--input-ids', ids, '--max-memory', '1MB'], 5],
  ];
  const results = await Promise.all(cases.map(([args]) => apex([...args, '--dump-stats', dump, '-o', out])));
  results.forEach((r, i) => expect(r.status, `${cases[i]![0].join(' ')}: ${r.stderr}`).toBe(cases[i]![1]));
  expect(existsSync(out)).toBe(false);
  expect(existsSync(dump)).toBe(false);
  expect(existsSync(`${out}.lock`)).toBe(false);
});
