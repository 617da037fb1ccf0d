// What a stage refuses: a loss or tensor that turns NaN/Inf (VerificationError, exit 6, no
// stage files), a memory estimate over --max-memory (ResourceLimitError, exit 5, nothing
// written), a later stage whose predecessor was not fused; what it warns about (sequences past
// the model's context); an interrupt during the fusion (no model folder, --resume fuses); and
// how --match-params sizes LoRA.
import { spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ExitCode, InputError, InterruptedError, ResourceLimitError, VerificationError } from '../../src/errors.js';
import { RUN_CONFIG_NAMES, runStage, type StageOptions } from '../../src/train/stage.js';
import { runExpand } from '../../src/pipeline/expand.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { loadSequences } from '../../src/train/data.js';
import { contextWarning } from '../../src/model/streaming-forward.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { idSet, LLAMA, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));
function newRun(): string {
  const { dir, cleanup } = tempRun('guards');
  cleanups.push(cleanup);
  return dir;
}

async function options(run: string, extra: Partial<StageOptions>): Promise<StageOptions> {
  return { model: STORIES, modelDir: STORIES, run, stage: 1, method: 'vanilla', train: await storyChunks(32), steps: 4, batchSize: 4, backend: 'wasm', expand: false, ...extra };
}

it('a loss that overflows stops the stage with exit 6 and writes no stage files', async () => {
  const run = newRun();
  const error = await runStage(await options(run, { lr: 1e30, gradClip: 0 })).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(VerificationError);
  expect((error as VerificationError).exit).toBe(ExitCode.verification);
  expect((error as Error).message).toMatch(/NaN|Infinity|Inf/);
  for (const f of ['trained.safetensors', 'apex_run.json', 'loss.svg']) expect(existsSync(join(run, 'stages/1', f)), f).toBe(false);
});

it('weights that diverge while the training loss is finite: the held-out NaN stops the stage with exit 6, no stage files', async () => {
  const run = newRun();
  const chunks = await storyChunks(32);
  const error = await runStage(await options(run, { lr: 1e9, steps: 1, eval: idSet(chunks.sequences.slice(0, 2)) })).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'NON_FINITE_LOSS', exit: ExitCode.verification, message: expect.stringMatching(/^the held-out loss is NaN after step 1 of stage 1: the weights diverged/) });
  for (const f of ['trained.safetensors', 'apex_run.json', 'model']) expect(existsSync(join(run, 'stages/1', f)), f).toBe(false);
});

it('--max-memory below the estimate refuses before anything is written, the analysis included (exit 5)', async () => {
  const run = newRun();
  const error = await runStage(await options(join(run, 'r'), { method: 'apex', setting: 'structured', maxMemoryBytes: 1e6 })).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ResourceLimitError);
  expect((error as Error).message).toMatch(/needs about .* more than the 1\.00 MB allowed/);
  expect(existsSync(join(run, 'r'))).toBe(false);
});

it('-o naming a file is refused before any work (exit 2)', async () => {
  const run = newRun();
  mkdirSync(run, { recursive: true });
  const file = join(run, 'not-a-folder');
  writeFileSync(file, 'x');
  const error = await runStage(await options(file, {})).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'OUTPUT_NOT_A_FOLDER', exit: 2, message: expect.stringContaining('is a file; a run is a folder') });
  expect(readFileSync(file, 'utf8')).toBe('x');
});

it('a resume on another backend continues, with a warning that names both backends', async () => {
  const run = newRun();
  const abort = new AbortController();
  await expect(runStage(await options(run, { saveEvery: 2, signal: abort.signal, onStep: (r) => { if (r.step === 2) abort.abort(); } }))).rejects.toBeInstanceOf(InterruptedError);
  const warnings: string[] = [];
  const resumed = await runStage(await options(run, { resume: true, backend: 'cpu', onWarning: (m) => warnings.push(m) }));
  expect(resumed.startStep).toBe(2);
  expect(warnings.filter((w) => w.includes('backend'))).toEqual([
    expect.stringMatching(/step-00000002 was made on the wasm backend and training continues on cpu: the result differs from an uninterrupted run by float rounding$/),
  ]);
});

it('a stage decides nothing while another process holds the run: complete, checkpointed or new, it is refused as locked', async () => {
  const run = newRun();
  mkdirSync(join(run, 'stages/1/checkpoints/step-00000002'), { recursive: true });
  writeFileSync(join(run, 'stages/1/apex_run.json'), '{}');
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    writeFileSync(`${run}.lock`, `${JSON.stringify({ pid: holder.pid, hostname: hostname(), startedAt: new Date().toISOString() })}\n`);
    for (const extra of [{}, { resume: true }, { force: true }]) {
      const error = await runStage(await options(run, extra)).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'OUTPUT_LOCKED', message: expect.stringContaining(`is locked by apex process ${holder.pid}`) });
    }
    expect(existsSync(join(run, 'stages/1/apex_run.json'))).toBe(true);
  } finally {
    holder.kill();
  }
});

it('-o naming a folder of other things (not a run) is refused before any work', async () => {
  const run = newRun();
  mkdirSync(run, { recursive: true });
  writeFileSync(join(run, 'notes.txt'), 'mine');
  const error = await runStage(await options(run, {})).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'OUTPUT_NOT_A_RUN', exit: 2, message: `-o ${run} holds notes.txt and is not an apex run folder (no analysis/, stages/ or run.json); give a new folder or an existing run` });
  expect(readdirSync(run)).toEqual(['notes.txt']);
  // what a killed analysis leaves (its temporary folder and lock) is a run's, not other things
  const killed = newRun();
  mkdirSync(join(killed, 'analysis.tmp-4194999-0badc0de'), { recursive: true });
  writeFileSync(join(killed, 'analysis.lock'), '{}');
  const resumed = await runStage(await options(killed, { steps: 1 })).catch((e: unknown) => e);
  expect((resumed as { code?: string }).code).not.toBe('OUTPUT_NOT_A_RUN');
});

it('stage 2 needs the fused model of stage 1: train stage 1 first, or fuse it', async () => {
  const run = newRun();
  const error = await runStage(await options(run, { stage: 2 })).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(InputError);
  expect((error as Error).message).toMatch(/stages\/1\/model does not exist: stage 2 starts from the fused model of stage 1 \(train stage 1 first\)$/);
  mkdirSync(join(run, 'stages/1'), { recursive: true });
  writeFileSync(join(run, 'stages/1/apex_run.json'), JSON.stringify({ base_model: STORIES }));
  const unfused = await runStage(await options(run, { stage: 2 })).catch((e: unknown) => e);
  expect((unfused as Error).message).toMatch(/\(apex expand --run .* --stage 1\)$/);
});

it('Ctrl-C while the stage is being fused: interrupted, no model folder; --resume fuses the trained stage without training again', async () => {
  const run = newRun();
  const abort = new AbortController();
  const heard: string[] = [];
  const progress = (m: string): void => {
    heard.push(m);
    // The fusion's writer reports its bytes; the stage's training is over by then.
    if (m.startsWith('writing ') && !abort.signal.aborted) abort.abort(new InterruptedError('interrupted by SIGINT'));
  };
  const error = await runStage({ ...(await options(run, { steps: 2 })), expand: true, signal: abort.signal, progress }).catch((e: unknown) => e);
  expect(heard.some((m) => m.startsWith('writing ')), 'the fusion started').toBe(true);
  expect(error).toBeInstanceOf(InterruptedError);
  expect((error as InterruptedError).exit).toBe(ExitCode.interrupted);
  expect(existsSync(join(run, 'stages/1/model')), 'no fused model after the interrupt').toBe(false);
  expect(readdirSync(join(run, 'stages/1')).filter((f) => f.startsWith('model')), 'no half-written model folder').toEqual([]);
  expect(existsSync(join(run, 'stages/1/apex_run.json')), 'the trained stage is recorded').toBe(true);
  const trained = readFileSync(join(run, 'stages/1/trained.safetensors'));
  // The same command again says what the stage lacks and that --resume finishes it (it said the
  // stage was "already complete" and offered only --force, which trains it again).
  const again = await runStage({ ...(await options(run, { steps: 2 })), expand: true }).catch((e: unknown) => e);
  expect(again).toMatchObject({ code: 'OUTPUT_EXISTS', exit: 2, message: expect.stringMatching(/^stage 1 of .* is trained \(.*apex_run\.json\) but not fused: .*stages\/1\/model does not exist; pass --resume to fuse it without training again, or --force to train it again$/) });

  const resumed = await runStage({ ...(await options(run, { steps: 2 })), expand: true, resume: true });
  expect(resumed.status).toBe('complete');
  expect(resumed.modelDir).toBe(join(run, 'stages/1/model'));
  expect(existsSync(join(run, 'stages/1/model/model.safetensors'))).toBe(true);
  expect(readFileSync(join(run, 'stages/1/trained.safetensors')).equals(trained), 'not trained again').toBe(true);
});

it('a complete stage whose recorded outputs went missing is refused on resume (exit 3), naming them', async () => {
  const run = newRun();
  await runStage(await options(run, { steps: 1 }));
  writeFileSync(join(run, 'stages/1/metrics.jsonl'), '{}\n');
  // Deleting what only fusion reads (the stage is fused, or fusion checks it) is the user's to do.
  rmSync(join(run, 'stages/1/trained.safetensors'));
  const error = await runStage(await options(run, { steps: 1, resume: true })).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(InputError);
  expect(error).toMatchObject({ code: 'STAGE_OUTPUT_MISSING', exit: 3 });
  expect((error as Error).message).toMatch(/is recorded as complete, but metrics\.jsonl has 3 bytes, \d+ recorded \(.*pass --force to train the stage again$/);
  rmSync(join(run, 'stages/1/metrics.jsonl'));
  expect(((await runStage(await options(run, { steps: 1, resume: true })).catch((e: unknown) => e)) as Error).message).toMatch(/but metrics\.jsonl is missing/);
});

it('--resume on a complete stage reuses it with the same options and refuses other ones (exit 2), naming them', async () => {
  const run = newRun();
  await runStage(await options(run, { steps: 2, lr: 1e-3 }));
  const same = await runStage(await options(run, { steps: 2, lr: 1e-3, resume: true }));
  expect([same.status, same.method, same.steps]).toEqual(['complete', 'vanilla', 2]);
  // Without --lr the run's plan decides the rate: not a change.
  expect((await runStage(await options(run, { steps: 2, resume: true }))).status).toBe('complete');
  const other = await runStage(await options(run, { steps: 5, lr: 0.5, method: 'lora', loraRank: 2, batchSize: 2, resume: true })).catch((e: unknown) => e);
  expect(other).toMatchObject({ code: 'STAGE_MISMATCH', exit: 2 });
  const message = (other as Error).message;
  for (const change of ['method "vanilla" then, "lora" now', 'learning rate 0.001 then, 0.5 now', 'batch size 4 then, 2 now', 'budget {"steps":2} then, {"steps":5} now']) expect(message).toContain(change);
  expect(message).toMatch(/pass --force to train it again$/);
  const chunks = await storyChunks(16);
  expect(((await runStage(await options(run, { steps: 2, train: chunks, resume: true })).catch((e: unknown) => e)) as Error).message).toContain('sequence length 32 then, 16 now');
  // The seed draws the data order and the held-out split: another one is another stage.
  expect(((await runStage(await options(run, { steps: 2, seed: 3, resume: true })).catch((e: unknown) => e)) as Error).message).toContain('seed 0 then, 3 now');
});

it('a checkpoint of an apex that did not record its settings is refused on --resume; one of version 1 that did is resumed', async () => {
  const run = newRun();
  // A crash in step 3: the checkpoint of step 2 is the last.
  await expect(runStage(await options(run, { steps: 4, saveEvery: 1, onStep: (r) => { if (r.step === 3) throw new Error('simulated crash'); } }))).rejects.toThrow('simulated crash');
  const stateFile = join(run, 'stages/1/checkpoints/step-00000002/state.json');
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { version: number; scalars: Record<string, unknown>; scalarsSha256: string };
  expect(state.version).toBe(2);
  const write = (version: number, scalars: Record<string, unknown>) =>
    writeFileSync(stateFile, JSON.stringify({ ...state, version, scalars, scalarsSha256: createHash('sha256').update(JSON.stringify(scalars)).digest('hex') }));
  // As apex wrote it before 2026-11-27 16:04: version 1, no settings.
  const { settings: _settings, ...older } = state.scalars;
  write(1, older);
  const refused = await runStage(await options(run, { steps: 4, saveEvery: 1, resume: true })).catch((e: unknown) => e);
  expect(refused).toMatchObject({ code: 'CHECKPOINT_MISMATCH', exit: 2 });
  expect((refused as Error).message).toMatch(/made by an earlier apex that did not record the settings it trained with.*--force to train stage 1 again/);
  // Within apex run, --force would discard the whole run: the message says what to delete instead.
  const inRun = await runStage(await options(run, { steps: 4, saveEvery: 1, resume: true, names: RUN_CONFIG_NAMES })).catch((e: unknown) => e);
  expect((inRun as Error).message).toMatch(/Delete .*stages\/1 and run the same apex run command again to train stage 1 from its start/);
  write(1, state.scalars);
  expect((await runStage(await options(run, { steps: 4, saveEvery: 1, resume: true }))).startStep).toBe(2);
});

it('a base model rewritten after training is not fused into: expand --run and --resume refuse it (exit 2), naming the file', async () => {
  const dir = newRun();
  const model = join(dir, 'base');
  const run = join(dir, 'run');
  cpSync(STORIES, model, { recursive: true });
  await runStage(await options(run, { model, modelDir: model, method: 'apex', setting: 'operators', steps: 1 }));
  // Same shapes, other weights: the last byte of the weights file (a float's low byte) flipped.
  const file = join(model, 'model.safetensors');
  const bytes = readFileSync(file);
  bytes[bytes.length - 1] ^= 0x01;
  writeFileSync(file, bytes);
  const error = await runExpand({ run, stage: 1 }).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'RUN_INPUT_CHANGED', exit: 2 });
  expect((error as Error).message).toMatch(/is not the model stage 1 of .* was trained from .*model\.safetensors \(sha256 [0-9a-f]{12}… when trained, [0-9a-f]{12}… now\)/);
  expect(existsSync(join(run, 'stages/1/model'))).toBe(false);
  const resumed = await runStage(await options(run, { model, modelDir: model, method: 'apex', setting: 'operators', steps: 1, resume: true, expand: true })).catch((e: unknown) => e);
  expect(resumed).toMatchObject({ code: 'RUN_INPUT_CHANGED' });
});

it('Ctrl-C during the held-out evaluation before the first step stops it (nothing trained); the same command then trains the stage', async () => {
  const run = newRun();
  const chunks = await storyChunks(32);
  const abort = new AbortController();
  const evaluations: string[] = [];
  const base = await options(run, { eval: chunks, evalEvery: 0 });
  // Aborted as a SIGINT handler would (a macrotask), once the evaluation has begun.
  const progress = (m: string) => { if (/held-out evaluation before training/.test(m)) { evaluations.push(m); setImmediate(() => abort.abort(new InterruptedError('interrupted by SIGINT'))); } };
  const error = await runStage({ ...base, signal: abort.signal, progress }).catch((e: unknown) => e);
  expect(evaluations).toHaveLength(1);
  expect(error).toBeInstanceOf(InterruptedError);
  expect((error as Error).message).toMatch(/during the held-out evaluation before the first step of stage 1; nothing was trained, run the same command again/);
  const again = await runStage(base);
  expect([again.status, again.startStep, again.steps]).toEqual(['trained', 0, 4]);
});

it('--resume on changed training data names the file that changed', async () => {
  const dir = newRun();
  const text = join(dir, 'notes.txt');
  writeFileSync(text, readFileSync('fixtures/corpus/in-domain/sotu/' + readdirSync('fixtures/corpus/in-domain/sotu')[0]!, 'utf8').slice(0, 6000));
  const tokenizer = (await loadTokenizer(LLAMA))!;
  const load = () => loadSequences({ data: [text], tokenizer, seqLen: 32, seed: 0 });
  const run = join(dir, 'run');
  const abort = new AbortController();
  const stage = { model: LLAMA, modelDir: LLAMA, run, stage: 1, method: 'vanilla', steps: 4, batchSize: 2, saveEvery: 1, backend: 'wasm', expand: false } as const;
  await expect(runStage({ ...stage, train: await load(), signal: abort.signal, onStep: (r) => { if (r.step === 1) abort.abort(); } } as StageOptions)).rejects.toBeInstanceOf(InterruptedError);
  writeFileSync(text, `${readFileSync(text, 'utf8')}\nOne more paragraph the checkpoint never saw, long enough to change the sequences.\n`);
  const error = await runStage({ ...stage, train: await load(), resume: true } as StageOptions).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'CHECKPOINT_MISMATCH', exit: 2 });
  expect((error as Error).message).toMatch(/was made on other training data \(.*notes\.txt \(sha256 [0-9a-f]{12}… then, [0-9a-f]{12}… now\); \d+ sequences now/);
});

it('a later stage refuses a model argument whose tokenizer is not the run\'s; a moved copy of the run\'s model is fine', async () => {
  const run = newRun();
  mkdirSync(join(run, 'stages/1/model'), { recursive: true });
  writeFileSync(join(run, 'stages/1/model/config.json'), '{}');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(LLAMA, f), join(run, 'stages/1/model', f));
  writeFileSync(join(run, 'stages/1/apex_run.json'), JSON.stringify({ base_model: '/models/moved-away/llama-mha-f32' }));
  const error = await runStage(await options(run, { stage: 2 })).catch((e: unknown) => e);
  expect(error).toMatchObject({
    code: 'MODEL_MISMATCH',
    exit: 2,
    message: `${run} was started from /models/moved-away/llama-mha-f32, not ${STORIES}, and their tokenizer files differ (tokenizer.json, tokenizer_config.json, special_tokens_map.json): stage 2 continues that run (its weights come from ${join(run, 'stages/1/model')}); give the run's model`,
  });
  const copy = join(run, '..', `${basename(run)}-model-copy`);
  cpSync(LLAMA, copy, { recursive: true });
  cleanups.push(() => rmSync(copy, { recursive: true, force: true }));
  const moved = await runStage(await options(run, { stage: 2, model: copy, modelDir: copy })).catch((e: unknown) => e);
  expect((moved as { code?: string }).code).not.toBe('MODEL_MISMATCH'); // (it fails later, on the stand-in config.json)
});

it('a token budget that is not whole steps, and a batch larger than the data, are said', async () => {
  const chunks = (await storyChunks(32)).sequences;
  const warnings: string[] = [];
  const result = await runStage(await options(newRun(), { train: idSet(chunks.slice(0, 3)), steps: undefined, tokens: 200, batchSize: 4, onWarning: (m) => warnings.push(m) }));
  expect(result.steps).toBe(2);
  expect(warnings).toContain('--tokens 200: training takes whole steps of 128 tokens, so 2 steps train 256 tokens');
  expect(warnings).toContain('--batch-size 4 is more than the 3 training sequences: every step repeats some of them');
});

it('sequences longer than max_position_embeddings train, with a warning that names the limit', async () => {
  // stories260K: max_position_embeddings 512, vocabulary 512.
  const long = Array.from({ length: 2 }, (_, r) => Int32Array.from({ length: 520 }, (_, i) => 1 + ((i * 7 + r) % 500)));
  const warnings: string[] = [];
  const result = await runStage(await options(newRun(), { train: idSet(long), steps: 1, batchSize: 2, onWarning: (m) => warnings.push(m) }));
  expect(result.steps).toBe(1);
  expect(warnings.filter((w) => /training sequences reach 520 tokens, past the model's context \(max_position_embeddings 512\).*--seq-len/.test(w))).toHaveLength(1);
  const spec = { maxPositionEmbeddings: 512 } as ModelSpec;
  expect(contextWarning(spec, 512)).toBeUndefined();
  expect(contextWarning(spec, 513)).toMatch(/reach 513 tokens/);
});

it('--match-params picks the LoRA rank whose count is closest to the APEX run\'s', async () => {
  const apexRun = newRun();
  const apex = await runStage(await options(apexRun, { method: 'apex', setting: 'structured', tunedAttnRatio: 0.25, tunedFfnRatio: 0.1, trainEmbeddings: false, steps: 1 }));
  // stories260K: per rank, Σ (in + out) over q, k, v, o, gate, up, down = 128 + 96 + 96 + 128 + 236 + 236 + 236 = 1156 per layer, 5 layers.
  const perRank = 5 * 1156;
  const expected = Math.round(apex.trainable.trainable / perRank);
  const lora = await runStage(await options(newRun(), { method: 'lora', matchParams: apexRun, steps: 1 }));
  expect(lora.lora!.rank).toBe(expected);
  expect(Math.abs(lora.trainable.trainable - apex.trainable.trainable)).toBeLessThanOrEqual(perRank / 2);

  // A record of another model is refused; a target beyond the largest rank is met as closely as it can be, with a warning.
  const record = (trainable: number, modelParams: number) => {
    const dir = newRun();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'apex_run.json'), JSON.stringify({ details: { method: 'apex', trainable: { trainable, modelParams } } }));
    return dir;
  };
  const other = await runStage(await options(newRun(), { method: 'lora', matchParams: record(5000, 1_328_256), steps: 1 })).catch((e: unknown) => e);
  expect(other).toMatchObject({ code: 'MATCH_PARAMS', exit: 3, message: expect.stringContaining(`that APEX run trained a model of 1,328,256 parameters, this one has ${apex.trainable.modelParams.toLocaleString('en-US')}`) });
  const warnings: string[] = [];
  const capped = await runStage(await options(newRun(), { method: 'lora', matchParams: record(10 * apex.trainable.modelParams, apex.trainable.modelParams), steps: 1, onWarning: (m) => warnings.push(m) }));
  expect(warnings).toContainEqual(expect.stringMatching(new RegExp(`^LoRA rank ${capped.lora!.rank} \\(the largest this model allows\\) trains [\\d,]+ parameters, -\\d+\\.\\d% from the`)));
});

it('a stage trained on a stage of another apex build says so', async () => {
  const run = newRun();
  await runStage({ ...(await options(run, { steps: 1, totalStages: 2 })), expand: true });
  const recordFile = join(run, 'stages/1/apex_run.json');
  const record = JSON.parse(readFileSync(recordFile, 'utf8')) as { apex_version: string };
  expect(record.apex_version).toMatch(/^0\.1\.0\+[0-9a-f]{12}$/);
  const warnings: string[] = [];
  await runStage(await options(run, { stage: 2, steps: 1, onWarning: (m) => warnings.push(m) }));
  expect(warnings.filter((w) => w.includes('two builds'))).toEqual([]);
  writeFileSync(recordFile, JSON.stringify({ ...record, apex_version: '0.1.0+000000000000' }));
  await runStage(await options(run, { stage: 2, steps: 1, force: true, onWarning: (m) => warnings.push(m) }));
  expect(warnings.some((w) => /stage 1 of .* was trained by apex 0\.1\.0\+000000000000, and apex 0\.1\.0\+[0-9a-f]{12} trains stage 2: the run's stages come from two builds/.test(w))).toBe(true);
});

it('--force refuses to train when the stage folder it would delete holds the model or the data (nothing deleted)', async () => {
  const run = newRun();
  await runStage({ ...(await options(run, { steps: 1 })), expand: true });
  const fused = join(run, 'stages/1/model');
  const before = readdirSync(fused).sort();
  // Stage 1 again, from the model the first training fused, into the same run: --force deletes stages/1.
  const error = await runStage({ ...(await options(run, { model: fused, modelDir: fused, steps: 1, force: true })), expand: true }).catch((e: unknown) => e);
  expect(error).toMatchObject({ code: 'OUTPUT_HOLDS_INPUT', exit: 2, message: expect.stringContaining(`the model (${fused})`) });
  expect(readdirSync(fused).sort()).toEqual(before);
  // A data file inside it too.
  const data = join(run, 'stages/1/notes.jsonl');
  writeFileSync(data, '{"text": "x"}\n');
  const train = await storyChunks(32);
  const withData = { ...train, source: { ...train.source, paths: [data] } };
  const dataError = await runStage(await options(run, { steps: 1, force: true, train: withData })).catch((e: unknown) => e);
  expect(dataError).toMatchObject({ code: 'OUTPUT_HOLDS_INPUT', exit: 2, message: expect.stringContaining(`the training data (${data})`) });
  expect(existsSync(data)).toBe(true);
  expect(existsSync(join(run, 'stages/1/apex_run.json'))).toBe(true);
});
