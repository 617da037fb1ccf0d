import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { changedKeys, RUN_STATE_FILE, RunState } from '../../src/pipeline/run-state.js';
import { createHash } from 'node:crypto';
import { canonicalJson, configHash } from '../../src/run/config-format.js';
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

  it('resumes under other results-neutral values (eval.batch_size, optimizer.recompute_activations, checkpoint.*), naming each change and recording the new values', async () => {
    const dir = runFolder();
    const first = await open(dir, await config());
    await first.complete('eval/before', 1, { perplexity: 7 });
    const now = await config(['eval.batch_size=2', 'checkpoint.keep=5', 'optimizer.recompute_activations=true']);
    const again = await open(dir, now);
    expect(again.start).toBe('resumed');
    expect(again.completed<{ perplexity: number }>('eval/before')?.result.perplexity).toBe(7);
    expect(again.neutralChanges.map(({ key, then, now: value }) => [key, then, value])).toEqual([['eval.batch_size', 8, 2], ['optimizer.recompute_activations', false, true], ['checkpoint.keep', 2, 5]]);
    const file = JSON.parse(readFileSync(path.join(dir, RUN_STATE_FILE), 'utf8'));
    expect([file.config.eval.batch_size, file.config.checkpoint.keep, file.config.optimizer.recompute_activations]).toEqual([2, 5, true]);
    expect(file.configHash).toBe(first.configHash);
    // The same values again: nothing to note.
    expect((await open(dir, now)).neutralChanges).toEqual([]);
  });

  it('notes no change of a neutral key recorded as null that is still null (not its schema default)', async () => {
    const dir = runFolder();
    await open(dir, await config(['checkpoint.every=null']));
    expect((await open(dir, await config(['checkpoint.every=null']))).neutralChanges).toEqual([]);
  });

  it('still refuses a result-changing key changed next to a neutral one, naming only the former', async () => {
    const dir = runFolder();
    await open(dir, await config());
    const err = await open(dir, await config(['eval.batch_size=2', 'eval.every=5'])).catch((e: unknown) => e);
    expect((err as UsageError).code).toBe('RUN_CONFIG_CHANGED');
    expect((err as Error).message).toContain('changed: eval.every)');
  });

  it('resumes a run.json whose hash also covered the neutral keys (an earlier apex), under another eval.batch_size too, and records the hash of now', async () => {
    const dir = runFolder();
    const c = await config();
    await open(dir, c);
    const file = path.join(dir, RUN_STATE_FILE);
    const record = JSON.parse(readFileSync(file, 'utf8'));
    const { output: _o, ...all } = c;
    const fullHash = createHash('sha256').update(canonicalJson(all)).digest('hex');
    writeFileSync(file, JSON.stringify({ ...record, configHash: fullHash }));
    const now = await config(['eval.batch_size=2']);
    expect((await open(dir, now)).start).toBe('resumed');
    expect(JSON.parse(readFileSync(file, 'utf8')).configHash).toBe(configHash(now));
    expect(configHash(now)).toBe(configHash(c));
  });

  it('resumes a run.json written by the apex before the token-id keys existed (its config lacks them)', async () => {
    // run.json's config as apex 06d0399 wrote it for `apex run model=… output=…` (no data.*_input_ids,
    // no data.train_samples): keys added since are unset (null) now, which means the same.
    const written = {"model":MODEL,"output":"/elsewhere/out","seed":0,"backend":"auto","max_memory":null,"data":{"train":["builtin:out-of-domain"],"eval":null,"calibration":null,"seq_len":128,"calibration_samples":32,"eval_samples":64},"method":"apex","setting":"full","structured":null,"lora":null,"stages":{"count":2,"steps":36,"tokens":null,"ratio":0.375,"decay_k":false,"score":"rank","random_selection":false,"reverse":false},"optimizer":{"lr":0.001,"betas":[0.9,0.95],"weight_decay":0,"grad_clip":1,"batch_size":8,"grad_accum":1,"warmup_fraction":0.03,"boundary_warmup_fraction":0.005},"eval":{"every":null,"batch_size":8},"checkpoint":{"every":12,"keep":2},"baseline":{"vanilla":true}};
    const dir = runFolder();
    mkdirSync(dir, { recursive: true });
    const steps = { baseline: { finishedAt: '2026-11-27T00:00:00.000Z', wallSeconds: 1, result: {} } };
    writeFileSync(path.join(dir, RUN_STATE_FILE), JSON.stringify({ format: 'apex.run-state/1', apexVersion: '0.1.0', configHash: 'ee4f0173e24ac08aa259322330f9762305ecfd126fe307068757d83d36aaead8', config: written, steps }));
    const state = await open(dir, await config());
    expect(state.start).toBe('resumed');
    // Nor is a results-neutral key the old record lacks (optimizer.recompute_activations) a change at its default.
    expect(state.neutralChanges).toEqual([]);
    // A key set now that the old record lacks is still a change.
    const err = await open(dir, await config(['data.train_samples=4'])).catch((e: unknown) => e);
    expect((err as UsageError).code).toBe('RUN_CONFIG_CHANGED');
    expect((err as Error).message).toContain('data.train_samples');
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
