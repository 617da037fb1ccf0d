// Training with activation recomputation (--recompute-activations, recomputed-layer.ts) is the
// same training bit for bit: the same losses, gradient norms and held-out losses step by step,
// the same trained tensors, operators, adapters and score counts (scores.safetensors), for every
// method, with gradient accumulation (the prepared per-step transforms) and without; on cpu, and
// APEX full also on wasm. The stage records the choice in its provenance, and a stage trained
// without it resumes with it (it is not part of the resume key). APEX structured also runs on a
// Qwen2 copy with q/k/v biases (the checkpointed layer's bias slots).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { InterruptedError, ResourceLimitError } from '../../src/errors.js';
import { stageSettings } from '../../src/pipeline/run-stage-settings.js';
import { resolveConfig } from '../../src/run/config.js';
import type { SequenceSet } from '../../src/train/data.js';
import { stageSettingsFromFlags } from '../../src/train/stage-flags.js';
import { resolveStageSettings } from '../../src/train/stage-options.js';
import { RUN_CONFIG_NAMES, runStage, type StageOptions } from '../../src/train/stage.js';
import { MINIMAL, tempFolder } from '../run/helpers.js';
import { idSet, stageFileMaxAbsDiff, stageMetrics, STORIES, storyChunks, tempRun, writeBiasedStories } from './stage-fixtures.js';

// Counts the checkpointed layers the training runs, so that a stage that ignored the option
// (and trained the ordinary way, trivially the same) fails.
const recomputed = vi.hoisted(() => ({ layers: 0 }));
vi.mock('../../src/model/recomputed-layer.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/model/recomputed-layer.js')>();
  return { ...m, recomputedDecoderLayer: (...args: Parameters<typeof m.recomputedDecoderLayer>) => (recomputed.layers++, m.recomputedDecoderLayer(...args)) };
});

const biased = tempRun('recompute-qwen2');
const cleanups: (() => void)[] = [biased.cleanup];
afterAll(() => cleanups.forEach((c) => c()));
let data: SequenceSet;
let held: SequenceSet;

beforeAll(async () => {
  await writeBiasedStories(biased.dir, 17);
  const chunks = (await storyChunks(16)).sequences;
  data = idSet(chunks.slice(0, 12));
  held = idSet(chunks.slice(12, 16));
});

const APEX_FILES = ['trained.safetensors', 'operators.safetensors', 'scores.safetensors'];
const scenarios = [
  { name: 'vanilla', options: { method: 'vanilla' }, files: ['trained.safetensors'], gradAccum: 1 },
  { name: 'vanilla, 3 micro-batches', options: { method: 'vanilla' }, files: ['trained.safetensors'], gradAccum: 3 },
  { name: 'LoRA', options: { method: 'lora', loraRank: 2 }, files: ['trained.safetensors'], gradAccum: 1 },
  { name: 'LoRA, 3 micro-batches (prepared transforms)', options: { method: 'lora', loraRank: 2 }, files: ['trained.safetensors'], gradAccum: 3 },
  { name: 'APEX operators', options: { method: 'apex', setting: 'operators' }, files: ['operators.safetensors', 'scores.safetensors'], gradAccum: 1 },
  { name: 'APEX structured, 3 micro-batches', options: { method: 'apex', setting: 'structured' }, files: APEX_FILES, gradAccum: 3 },
  { name: 'APEX structured on wasm, Qwen2 with q/k/v biases, 3 micro-batches', options: { method: 'apex', setting: 'structured', backend: 'wasm', model: biased.dir, modelDir: biased.dir }, files: APEX_FILES, gradAccum: 3 },
  { name: 'APEX full', options: { method: 'apex', setting: 'full' }, files: APEX_FILES, gradAccum: 1 },
  { name: 'APEX full, 3 micro-batches', options: { method: 'apex', setting: 'full' }, files: APEX_FILES, gradAccum: 3 },
  { name: 'APEX full on wasm, 3 micro-batches', options: { method: 'apex', setting: 'full', backend: 'wasm' }, files: APEX_FILES, gradAccum: 3 },
] as const;

async function run(extra: Partial<StageOptions>): Promise<string> {
  const { dir: made, cleanup } = tempRun('recompute');
  cleanups.push(cleanup);
  const dir = extra.run ?? made;
  await runStage({
    model: STORIES, modelDir: STORIES, run: dir, stage: 1, train: data, eval: held, steps: 3, batchSize: 2, gradAccum: 1, lr: 1e-3,
    saveEvery: 0, evalEvery: 1, expand: false, backend: 'cpu', ...extra,
  } as StageOptions);
  return dir;
}

async function provenance(dir: string): Promise<Record<string, unknown>> {
  return (JSON.parse(await readFile(join(dir, 'stages/1/apex_run.json'), 'utf8')) as { details: Record<string, unknown> }).details;
}

describe('activation recomputation in training (stories260K, 3 steps of 2 sequences)', () => {
  for (const sc of scenarios) {
    it(`${sc.name}: the same training, bit for bit`, async () => {
      const options = { ...(sc.options as Partial<StageOptions>), gradAccum: sc.gradAccum };
      recomputed.layers = 0;
      const plain = await run(options);
      expect(recomputed.layers, 'checkpointed layers without the option').toBe(0);
      const withIt = await run({ ...options, recomputeActivations: true });
      // 5 layers × (3 steps × the micro-batches per step, and the 4 held-out evaluations (before
      // the first step and after each) of 2 batches, which run a layer at a time too).
      expect(recomputed.layers, 'checkpointed layers').toBe(5 * (3 * sc.gradAccum + 4 * 2));
      const a = await stageMetrics(withIt);
      const b = await stageMetrics(plain);
      expect(a.filter((l) => l.loss !== undefined).map((l) => l.step)).toEqual([1, 2, 3]);
      expect(a.length).toBe(b.length);
      a.forEach((l, i) => {
        expect(l.loss, `loss at step ${l.step}`).toBe(b[i]!.loss);
        expect(l.grad_norm, `gradient norm at step ${l.step}`).toBe(b[i]!.grad_norm);
        expect(l.eval_loss, `held-out loss at step ${l.step}`).toBe(b[i]!.eval_loss);
      });
      for (const file of sc.files) expect(await stageFileMaxAbsDiff(withIt, plain, file), file).toBe(0);
      expect((await provenance(withIt)).recompute_activations).toBe(true);
      expect((await provenance(plain)).recompute_activations).toBe(false);
    });
  }

  it('is not part of the resume key: a stage interrupted without it resumes with it and ends as the uninterrupted stage, bit for bit', async () => {
    const apex = { method: 'apex', setting: 'full', saveEvery: 1 } as const;
    const whole = await run(apex);
    const { dir, cleanup } = tempRun('recompute-resume');
    cleanups.push(cleanup);
    const abort = new AbortController();
    await expect(run({ ...apex, run: dir, signal: abort.signal, onStep: (r) => { if (r.step === 1) abort.abort(); } })).rejects.toBeInstanceOf(InterruptedError);
    recomputed.layers = 0;
    const resumed = await run({ ...apex, run: dir, resume: true, recomputeActivations: true });
    expect(resumed).toBe(dir);
    expect(recomputed.layers).toBeGreaterThan(0);
    for (const file of APEX_FILES) expect(await stageFileMaxAbsDiff(dir, whole, file), file).toBe(0);
    expect((await stageMetrics(dir)).filter((l) => l.loss !== undefined).map((l) => l.loss)).toEqual((await stageMetrics(whole)).filter((l) => l.loss !== undefined).map((l) => l.loss));
    // The record says which steps ran with it (the setting of this session alone would say "on").
    const details = async (run: string) => (JSON.parse(await readFile(join(run, 'stages/1/apex_run.json'), 'utf8')) as { details: Record<string, unknown> }).details;
    expect(await details(dir)).toMatchObject({ recompute_activations: true, recompute_activations_from: [{ from_step: 0, recompute: false }, { from_step: 1, recompute: true }] });
    expect(await details(whole)).not.toHaveProperty('recompute_activations_from');
    // A stage trained in one session records one span in its checkpoints.
    expect(JSON.parse(await readFile(join(whole, 'stages/1/checkpoints/step-00000003/state.json'), 'utf8')).scalars.recomputeFrom).toEqual([{ fromStep: 0, recompute: false }]);
  });

  it('is not part of the resume key: a stage trained without it is reused with --resume and it on', async () => {
    const plain = await run({ method: 'apex', setting: 'full', saveEvery: 1 });
    const before = await readFile(join(plain, 'stages/1/trained.safetensors'));
    await run({ method: 'apex', setting: 'full', saveEvery: 1, run: plain, resume: true, recomputeActivations: true });
    expect((await readFile(join(plain, 'stages/1/trained.safetensors'))).equals(before)).toBe(true);
  });

  it('the dry run plans with it: smaller activations, and a budget only it fits is refused advising it, then accepted with it', async () => {
    const { dir, cleanup } = tempRun('recompute-dry');
    cleanups.push(cleanup);
    // Vanilla: an APEX stage 1 would first be refused for its analysis at so small a budget.
    const dry = async (extra: Partial<StageOptions>) => {
      const result = await runStage({
        model: STORIES, modelDir: STORIES, run: join(dir, 'x'), stage: 1, train: data, eval: held, steps: 3, batchSize: 2, lr: 1e-3,
        saveEvery: 0, evalEvery: 1, expand: false, backend: 'cpu', method: 'vanilla', dryRun: true, ...extra,
      } as StageOptions);
      return result.plan!.memory;
    };
    const plain = await dry({});
    const rec = await dry({ recomputeActivations: true });
    expect([plain.recompute, rec.recompute]).toEqual([false, true]);
    // stories260K at 2 × 16 tokens: 5 layers of 7872 floats per token kept, against 2·D per layer and one layer's.
    expect(plain.activationBytes - rec.activationBytes).toBe(4 * 2 * 16 * (5 * 7872 - (2 * 5 * 64 + 7872)));
    expect(plain.totalBytesWithRecompute).toBe(rec.totalBytes);
    const refused = await dry({ maxMemoryBytes: rec.totalBytes }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ResourceLimitError);
    expect((refused as Error).message).toMatch(/; add --recompute-activations \(about .*\); or raise --max-memory/);
    await expect(dry({ maxMemoryBytes: rec.totalBytes, recomputeActivations: true })).resolves.toEqual(rec);
  });

  it('on wasm, a plan over the heap that recomputation brings under it is refused advising it, and accepted with it', async () => {
    const { dir, cleanup } = tempRun('recompute-heap');
    cleanups.push(cleanup);
    // 8 × 1024 tokens: about 12 GB of tensors kept for the backward pass, about 2.6 GB recomputing.
    const long = idSet(Array.from({ length: 8 }, (_s, i) => Int32Array.from({ length: 1024 }, (_t, j) => (i * 31 + j * 7) % 512)));
    const dry = (extra: Partial<StageOptions>) =>
      runStage({ model: STORIES, modelDir: STORIES, run: join(dir, 'x'), stage: 1, train: long, steps: 1, batchSize: 8, lr: 1e-3, saveEvery: 0, expand: false, backend: 'wasm', method: 'vanilla', dryRun: true, ...extra } as StageOptions);
    const refused = await dry({}).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'MEMORY_WASM_HEAP', exit: 5 });
    expect((refused as Error).message).toMatch(/; add --recompute-activations \(each layer's activations are recomputed in the backward pass, the same results\), or lower --batch-size or --seq-len/);
    const planned = await dry({ recomputeActivations: true });
    expect(planned.status).toBe('planned');
    // apex run's refusal names its config keys throughout, not apex finetune's flags.
    const inRun = await dry({ names: RUN_CONFIG_NAMES }).catch((e: unknown) => e);
    expect((inRun as Error).message).toMatch(/; set optimizer\.recompute_activations: true \(each layer's activations are recomputed in the backward pass, the same results\), or lower optimizer\.batch_size or data\.seq_len \(use optimizer\.grad_accum to keep the batch\), or use another backend/);
  });

  it('comes from --recompute-activations and from optimizer.recompute_activations, default off', async () => {
    expect(resolveStageSettings(stageSettingsFromFlags('m', { output: 'o', stage: 1, 'recompute-activations': true, steps: 1 }, [])).recomputeActivations).toBe(true);
    expect(resolveStageSettings(stageSettingsFromFlags('m', { output: 'o', stage: 1, steps: 1 }, [])).recomputeActivations).toBe(false);
    const cwd = tempFolder({ 'run.yaml': MINIMAL });
    const line = { key: 'run', name: 'run', method: 'apex' as const, folder: cwd };
    const on = await resolveConfig({ file: 'run.yaml', overrides: ['optimizer.recompute_activations=true'], cwd });
    const off = await resolveConfig({ file: 'run.yaml', cwd });
    expect(off.config.optimizer.recompute_activations).toBe(false);
    expect(stageSettings(on.config, line, 1, 'm').recomputeActivations).toBe(true);
    expect(stageSettings(off.config, line, 1, 'm').recomputeActivations).toBe(false);
  });
});
