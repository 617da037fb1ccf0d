import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { changedKeys, RUN_STATE_FILE, RunState } from '../../src/pipeline/run-state.js';
import { configHash } from '../../src/run/config-format.js';
import { resolveConfig } from '../../src/run/config.js';

const MODEL = path.resolve('fixtures/llama-mha-f32');

async function config(overrides: string[] = []) {
  return (await resolveConfig({ overrides: [`model=${MODEL}`, ...overrides], cwd: tmpdir() })).config;
}

function runFolder(): string {
  return path.join(mkdtempSync(path.join(tmpdir(), 'apex-run-state-')), 'run');
}

const open = (dir: string, c: Awaited<ReturnType<typeof config>>, force = false) => RunState.open(dir, c, { force, apexVersion: 'test' });

describe('run state (run.json)', () => {
  it('creates a new run folder recording the config and its hash', async () => {
    const dir = runFolder();
    const c = await config();
    const state = await open(dir, c);
    expect(state.start).toBe('new');
    const file = JSON.parse(readFileSync(path.join(dir, RUN_STATE_FILE), 'utf8'));
    expect(file.format).toBe('apex.run-state/1');
    expect(file.configHash).toBe(configHash(c));
    expect(file.config).toEqual(c);
    expect(file.steps).toEqual({});
  });

  it('resumes the same config and keeps the completed steps', async () => {
    const dir = runFolder();
    const c = await config();
    const first = await open(dir, c);
    await first.complete('eval/before', 1.5, { perplexity: 120 });
    const again = await open(dir, await config());
    expect(again.start).toBe('resumed');
    expect(again.completed<{ perplexity: number }>('eval/before')?.result.perplexity).toBe(120);
    expect(again.completed('eval/before')?.wallSeconds).toBe(1.5);
    expect(again.completed('analysis')).toBeUndefined();
  });

  it('does not count a step whose files are gone', async () => {
    const state = await open(runFolder(), await config());
    await state.complete('run/stage/1', 2, null);
    expect(state.completed('run/stage/1', () => false)).toBeUndefined();
    expect(state.completed('run/stage/1', () => true)).toBeDefined();
  });

  it('refuses a different config, naming the changed keys and --force, and leaves the folder alone', async () => {
    const dir = runFolder();
    await open(dir, await config());
    const before = readFileSync(path.join(dir, RUN_STATE_FILE), 'utf8');
    const err = await open(dir, await config(['stages.count=3', 'optimizer.lr=1e-4'])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).code).toBe('RUN_CONFIG_CHANGED');
    expect((err as UsageError).exit).toBe(2);
    expect((err as Error).message).toContain('optimizer.lr, stages.count');
    expect((err as Error).message).toContain('--force');
    expect(readFileSync(path.join(dir, RUN_STATE_FILE), 'utf8')).toBe(before);
  });

  it('treats a moved run folder (another output) as the same run', async () => {
    const dir = runFolder();
    await open(dir, await config([`output=${dir}`]));
    expect((await open(dir, await config(['output=/elsewhere']))).start).toBe('resumed');
  });

  it('refuses a non-empty folder that is not a run, unless forced', async () => {
    const dir = runFolder();
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const err = await open(dir, await config()).catch((e: unknown) => e);
    expect((err as UsageError).code).toBe('OUTPUT_EXISTS');
    expect(readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
    const state = await open(dir, await config(), true);
    expect(state.start).toBe('restarted');
    expect(readdirSync(dir)).toEqual([RUN_STATE_FILE]);
  });

  it('with force, discards the old run completely and leaves nothing aside', async () => {
    const dir = runFolder();
    const old = await open(dir, await config());
    await old.complete('eval/before', 1, { perplexity: 1 });
    mkdirSync(path.join(dir, 'stages', '1'), { recursive: true });
    const state = await open(dir, await config(['stages.count=3']), true);
    expect(state.start).toBe('restarted');
    expect(state.completed('eval/before')).toBeUndefined();
    expect(existsSync(path.join(dir, 'stages'))).toBe(false);
    expect(readdirSync(path.dirname(dir))).toEqual(['run']);
  });

  it('an empty folder is a new run', async () => {
    const dir = runFolder();
    mkdirSync(dir, { recursive: true });
    expect((await open(dir, await config())).start).toBe('new');
  });

  it('changedKeys lists differing leaves by dotted path', () => {
    expect(changedKeys({ a: 1, b: { c: [1, 2], d: 'x' } }, { a: 1, b: { c: [1, 3], d: 'x', e: null } })).toEqual(['b.c']);
    expect(changedKeys({ a: 1 }, { a: 2, f: 3 })).toEqual(['a', 'f']);
  });
});
