// `apex finetune --dry-run`: everything up to the first training step is checked and the plan
// returned, and nothing is written. The plan's numbers are checked against the stage that then
// really trains with the same options (its own record is the independent truth).
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResourceLimitError, UsageError } from '../../src/errors.js';
import type { SequenceSet } from '../../src/train/data.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { f32Tensor, writeSafetensorsFile } from '../../src/io/safetensors-writer.js';
import { idSet, readAllF32, STORIES, storyChunks, tempRun } from './stage-fixtures.js';
import { fingerprint } from '../pipeline/run-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
function newRun(): string {
  const { dir, cleanup } = tempRun('dry-run');
  cleanups.push(cleanup);
  return join(dir, 'run');
}

let data: SequenceSet;
let held: SequenceSet;
beforeAll(async () => {
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 10));
  held = idSet(chunks.slice(10, 14));
});

const options = (run: string, extra: Partial<StageOptions> = {}): StageOptions => optionsOf(run, extra);
const optionsOf = (run: string, extra: Partial<StageOptions> = {}): StageOptions => ({
  model: STORIES, modelDir: STORIES, run, stage: 1, train: data, eval: held, steps: 2, batchSize: 2, evalBatchSize: 4, lr: 1e-3,
  saveEvery: 0, evalEvery: 0, expand: false, backend: 'cpu', method: 'apex', setting: 'full', calibrationSamples: 6, ...extra,
});

describe('a dry run of a stage', () => {
  it('returns the plan the stage then trains by (steps, tokens, trainable parameters, memory estimate) and writes nothing', async () => {
    const run = newRun();
    const dry = await runStage(options(run, { dryRun: true }));
    expect(dry.status).toBe('planned');
    expect(existsSync(run)).toBe(false);
    expect(dry.plan).toMatchObject({ batchSize: 2, gradAccum: 1, seqLen: 16, tokensPerStep: 32, trainSequences: 10, eval: { batchSize: 4, seqLen: 16, sequences: 4 }, analysisSequences: 6, peakLr: 1e-3 });
    expect([dry.steps, dry.startStep, dry.tokens]).toEqual([2, 0, 64]);

    const real = await runStage(options(run));
    const record = JSON.parse(readFileSync(join(run, 'stages', '1', 'apex_run.json'), 'utf8')) as { details: { trainable: unknown; memory_estimate: unknown } };
    expect(dry.trainable).toEqual(record.details.trainable);
    expect(dry.plan!.memory).toEqual(record.details.memory_estimate);
    expect(dry.memoryEstimateBytes).toBe(real.memoryEstimateBytes);
    // The analysis it ran first estimated what the dry run reported for it.
    const analysis = JSON.parse(readFileSync(join(run, 'analysis', 'analysis.json'), 'utf8')) as { memory: { estimateBytes: number } };
    expect(dry.plan!.analysisMemory!.totalBytes).toBe(analysis.memory.estimateBytes);
    expect([real.steps, real.tokens]).toEqual([dry.steps, dry.tokens]);

    // On the complete stage: refused without --resume, as the real command is; with it, reported
    // complete without fusing (the real --resume would fuse into stages/1/model/).
    expect(((await runStage(options(run, { dryRun: true })).catch((e: unknown) => e)) as UsageError).code).toBe('OUTPUT_EXISTS');
    const again = await runStage(options(run, { dryRun: true, resume: true, expand: true }));
    expect(again.status).toBe('complete');
    expect(existsSync(join(run, 'stages', '1', 'model'))).toBe(false);
  });

  it('refuses a plan over --max-memory with exit 5, writing nothing', async () => {
    const run = newRun();
    const err = await runStage(options(run, { dryRun: true, maxMemoryBytes: 1_000_000 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect((err as ResourceLimitError).exit).toBe(5);
    expect(existsSync(run)).toBe(false);
  });

  it('refuses an -o whose lock file name is too long for the filesystem as the stage does (exit 2), also when the folder name itself would fit', async () => {
    for (const length of [300, 245]) {
      const run = join(newRun(), '..', 'r'.repeat(length));
      const dry = await runStage(options(run, { dryRun: true, method: 'vanilla', setting: undefined, calibrationSamples: undefined })).catch((e: unknown) => e);
      expect(dry, `${length}`).toMatchObject({ exit: 2, code: 'OUTPUT_NOT_WRITABLE', message: expect.stringContaining('ENAMETOOLONG') });
      const real = await runStage(options(run, { method: 'vanilla', setting: undefined, calibrationSamples: undefined })).catch((e: unknown) => e);
      expect(real, `${length}`).toMatchObject({ exit: 2, code: 'OUTPUT_NOT_WRITABLE' });
      // The same words, but for the random part of the lock file's name.
      expect((real as Error).message).toBe((dry as Error).message);
      expect((real as Error).message.startsWith(`${run}: `)).toBe(true);
    }
    // Refused before the folders above it are made: nothing is left behind.
    const parent = join(newRun(), 'new-parent');
    const real = await runStage(options(join(parent, 'r'.repeat(245)), { method: 'vanilla', setting: undefined, calibrationSamples: undefined })).catch((e: unknown) => e);
    expect(real).toMatchObject({ exit: 2, code: 'OUTPUT_NOT_WRITABLE' });
    expect(existsSync(parent)).toBe(false);
  });

  it('refuses an analysis over --max-memory as the stage then does, when training alone would fit', async () => {
    // operators trains little: its estimate (≈ 33 MB here, 21 of them the command's) is under the
    // analysis's of 2,000 sequences (≈ 39 MB: it keeps all their hidden states, 8 kB each).
    const run = newRun();
    const many = idSet(Array.from({ length: 2000 }, (_, i) => data.sequences[i % data.sequences.length]!));
    const options = (r: string, extra: Partial<StageOptions>) => optionsOf(r, { train: many, calibrationSamples: 2000, ...extra });
    const dry = await runStage(options(run, { setting: 'operators', dryRun: true }));
    const budget = Math.round((dry.plan!.memory.totalBytes + dry.plan!.analysisMemory!.totalBytes) / 2);
    expect(dry.plan!.memory.totalBytes).toBeLessThan(budget);
    const refused = await runStage(options(run, { setting: 'operators', dryRun: true, maxMemoryBytes: budget })).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ResourceLimitError);
    expect((refused as ResourceLimitError).exit).toBe(5);
    expect((refused as ResourceLimitError).code).toBe('MEMORY_BUDGET');
    expect((refused as Error).message).toMatch(/a forward pass of one 16-token sequence needs .* more than the .* allowed; raise --max-memory/);
    expect(existsSync(run)).toBe(false);
    const real = await runStage(options(run, { setting: 'operators', maxMemoryBytes: budget })).catch((e: unknown) => e);
    expect((real as Error).message).toBe((refused as Error).message);
    expect(existsSync(join(run, 'analysis'))).toBe(false);
  });

  it('refuses what the stage would refuse after sizing it: an analysis of another ratio, a checkpoint of other settings; plans a resume from the checkpoint', async () => {
    const run = newRun();
    const code = (p: Promise<unknown>) => p.then(() => 'planned', (e: UsageError) => e.code);
    // Stage 1 trained (with its analysis), then its stage folder removed: the analysis stays.
    await runStage(options(run));
    rmSync(join(run, 'stages', '1'), { recursive: true });
    expect(await code(runStage(options(run, { dryRun: true, ratio: 0.25 })))).toBe('ANALYSIS_MISMATCH');
    const said: string[] = [];
    expect((await runStage(options(run, { dryRun: true, progress: (m) => said.push(m) }))).plan!.analysisSequences).toBeNull(); // the analysis is reused
    expect(said).toContain(`selecting stage 1's units by the existing analysis ${join(run, 'analysis')}, calibrated on 6 sequences`);
    // Interrupted after step 2 with a checkpoint at every step.
    const abort = new AbortController();
    await runStage(options(run, { steps: 4, saveEvery: 1, signal: abort.signal, onStep: (r) => { if (r.step === 2) abort.abort(); } })).catch(() => undefined);
    const before = fingerprint(run);
    expect(await code(runStage(options(run, { steps: 4, saveEvery: 1, dryRun: true, resume: true, lr: 5e-3 })))).toBe('CHECKPOINT_MISMATCH');
    const resumed = await runStage(options(run, { steps: 4, saveEvery: 1, dryRun: true, resume: true }));
    expect([resumed.status, resumed.startStep]).toEqual(['planned', 2]);
    // The room it asks for one checkpoint (its tensors: 12 bytes per trainable entry) is what a
    // real checkpoint of this stage holds, less its headers, digests and score counts (< 5%).
    const checkpoint = join(run, 'stages', '1', 'checkpoints', 'step-00000002');
    const bytes = readdirSync(checkpoint).reduce((n, f) => n + statSync(join(checkpoint, f)).size, 0);
    const asked = 12 * resumed.trainable.trainable;
    expect(asked).toBeLessThanOrEqual(bytes);
    expect(bytes - asked).toBeLessThan(0.05 * bytes);
    expect(fingerprint(run)).toEqual(before);
    // A tensors file that lacks a tensor: refused by the dry run as by the stage, which both open
    // the checkpoint's header (neither reads tensor values before the restore).
    const tensorsFile = join(checkpoint, 'tensors.safetensors');
    const all = await readAllF32(tensorsFile);
    const dropped = [...all.keys()].find((n) => n.startsWith('adam_v.'))!;
    await writeSafetensorsFile(tensorsFile, [...all].filter(([n]) => n !== dropped).map(([n, t]) => f32Tensor(n, t.shape, t.values)), { format: 'apex-train-state' });
    expect(await code(runStage(options(run, { steps: 4, saveEvery: 1, dryRun: true, resume: true })))).toBe('CHECKPOINT_INCOMPLETE');
    expect(await code(runStage(options(run, { steps: 4, saveEvery: 1, resume: true })))).toBe('CHECKPOINT_INCOMPLETE');
  });
});
