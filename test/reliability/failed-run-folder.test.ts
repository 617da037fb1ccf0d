// A failed `apex finetune` / `apex run` (issue 8, nothing half-written): a run folder the failed
// invocation created and that holds nothing to resume from is gone afterwards; a folder that
// was there before keeps its contents; a folder holding a checkpoint, a recorded evaluation or
// a live process's work is never removed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path, { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InterruptedError, VerificationError } from '../../src/errors.js';
import { removeUnresumableRunFolder } from '../../src/pipeline/failed-run-folder.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { resolveConfig } from '../../src/run/config.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { tempDir } from '../io/helpers.js';
import { configFolder, microConfig } from '../pipeline/run-fixtures.js';
import { STORIES, storyChunks } from '../train/stage-fixtures.js';

async function nanStage(run: string): Promise<unknown> {
  const options: StageOptions = { model: STORIES, modelDir: STORIES, run, stage: 1, method: 'vanilla', train: await storyChunks(32), steps: 4, batchSize: 4, backend: 'wasm', expand: false, lr: 1e30, gradClip: 0 };
  return runStage(options).catch((e: unknown) => e);
}

describe('apex finetune', () => {
  it('a NaN loss in a run folder it created leaves no folder (and no lock) behind', async () => {
    const parent = await tempDir('apex-failed-');
    const run = join(parent, 'runs', 'a');
    await mkdir(join(parent, 'runs'));
    expect(await nanStage(run)).toBeInstanceOf(VerificationError);
    expect(await readdir(join(parent, 'runs'))).toEqual([]);
  });

  it('the same failure in an existing run folder leaves its previous contents as they were', async () => {
    const run = await tempDir('apex-failed-');
    await mkdir(join(run, 'stages', '2'), { recursive: true });
    await writeFile(join(run, 'notes.txt'), 'mine');
    await writeFile(join(run, 'stages', '2', 'metrics.jsonl'), '');
    expect(await nanStage(run)).toBeInstanceOf(VerificationError);
    expect(await readFile(join(run, 'notes.txt'), 'utf8')).toBe('mine');
    expect(existsSync(join(run, 'stages', '2', 'metrics.jsonl'))).toBe(true);
    for (const f of ['trained.safetensors', 'apex_run.json']) expect(existsSync(join(run, 'stages', '1', f)), f).toBe(false);
  });
});

describe('apex run', () => {
  const { dir, file } = configFolder(microConfig());

  async function interruptedRun(output: string): Promise<{ error: unknown; lines: string[] }> {
    const resolved = await resolveConfig({ file, overrides: [`output=${output}`], cwd: dir });
    const abort = new AbortController();
    const lines: string[] = [];
    // Ctrl-C just after the run folder and run.json were created, before any work is recorded.
    const log = (m: string) => { lines.push(m); if (/^(starting|resuming) run/.test(m)) abort.abort(new InterruptedError('interrupted by SIGINT')); };
    const error = await runPipeline({ resolved, signal: abort.signal, log, status: () => {}, onWarning: (m) => lines.push(`warning: ${m}`) }).catch((e: unknown) => e);
    return { error, lines };
  }

  it('interrupted before any work: the run folder it created is removed', async () => {
    const out = join(dir, 'new-run');
    const { error, lines } = await interruptedRun(out);
    expect(error).toBeInstanceOf(InterruptedError);
    expect(existsSync(out)).toBe(false);
    expect(lines.join('\n')).toContain(`removed ${out}`);
    expect((await readdir(dir)).sort()).toEqual(['run.yaml']);
  });

  it('interrupted in a folder that existed (empty) before: the folder stays', async () => {
    const out = join(dir, 'empty-before');
    await mkdir(out);
    const { error } = await interruptedRun(out);
    expect(error).toBeInstanceOf(InterruptedError);
    expect(existsSync(out)).toBe(true);
  });
});

describe('what counts as nothing to resume from', () => {
  const holder = spawn('sleep', ['600'], { stdio: 'ignore' });
  afterAll(() => { holder.kill('SIGKILL'); });
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;

  async function folder(files: Record<string, string>, dirs: string[] = []): Promise<string> {
    const run = join(await tempDir('apex-resumable-'), 'run');
    for (const d of dirs) await mkdir(join(run, d), { recursive: true });
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(join(run, name)), { recursive: true });
      await writeFile(join(run, name), text);
    }
    return run;
  }

  it('removes logs, empty folders, this or dead processes\' temporaries and a run record of cheap steps only', async () => {
    const run = await folder({
      'run.json': JSON.stringify({ steps: { model: {}, data: {} } }),
      'stages/1/metrics.jsonl': '{"step":1}\n',
      [`stages/1/loss.svg.tmp-${dead}-0badc0de`]: 'half',
      [`stages/1/apex_run.json.tmp-${process.pid}-12345678`]: 'half',
    }, ['stages/1/checkpoints', 'analysis']);
    expect(await removeUnresumableRunFolder(run)).toBe(true);
    expect(existsSync(run)).toBe(false);
  });

  const keeps: [string, Record<string, string>][] = [
    ['a trainer checkpoint', { 'stages/1/checkpoints/step-00000002/state.json': '{}' }],
    ['a stage record', { 'stages/1/apex_run.json': '{}' }],
    ['an analysis', { 'analysis/stats.safetensors': 'x' }],
    ['an evaluation recorded in run.json', { 'run.json': JSON.stringify({ steps: { model: {}, 'eval/before': {} } }) }],
    ['an unreadable run.json', { 'run.json': '{' }],
    ['a live process\'s temporary', { [`stages/1/loss.svg.tmp-${holder.pid}-0badc0de`]: 'half' }],
    ['a complete output moved aside', { [`stages/1/model.old-${dead}-0badc0de/config.json`]: '{}' }],
    ['a lock file', { 'stages/1/checkpoints/step-00000004.lock': '{}' }],
  ];
  for (const [what, files] of keeps) {
    it(`keeps a folder holding ${what}`, async () => {
      const run = await folder({ 'stages/1/metrics.jsonl': '', ...files });
      expect(await removeUnresumableRunFolder(run)).toBe(false);
      for (const name of Object.keys(files)) expect(existsSync(join(run, name)), name).toBe(true);
    });
  }
});
