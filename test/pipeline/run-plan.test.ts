// `apex run --dry-run` (planRun) says what the run would say before it trains: a changed input
// of a run to resume is refused, --force refuses a folder that holds the run's own data and
// accepts one that holds anything else (the run would discard it), and the next stage of a
// half-done run is the one planned. Nothing is written in any case.
import { appendFileSync, copyFileSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import type { UsageError } from '../../src/errors.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { planRun } from '../../src/pipeline/run-plan.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { resolveConfig } from '../../src/run/config.js';
import { configFolder, fingerprint, MODEL } from './run-fixtures.js';

const TEXT = 'fixtures/corpus/out-of-domain/moby-dick/002-chapter-1.txt';
const MORE = 'fixtures/corpus/out-of-domain/moby-dick/003-chapter-2.txt';
const config = (data: string, extra = '') =>
  [`model: ${MODEL}`, 'backend: wasm', 'method: vanilla', 'data:', `  train: [${data}]`, '  seq_len: 32', '  eval_samples: 4', 'stages: { count: 3, steps: 1 }', 'optimizer: { lr: 0.001, batch_size: 2 }', 'eval: { every: null, batch_size: 4 }', 'baseline: { vanilla: false }', 'output: out', extra].join('\n');
const resolved = (file: string) => resolveConfig({ file, overrides: [], cwd: path.dirname(file) });
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: UsageError) => e.code);

it('a run to resume: the next stage is planned; a data file changed since the run began is refused as the run refuses it', async () => {
  const { dir, file } = configFolder('');
  copyFileSync(TEXT, path.join(dir, 'd.txt'));
  writeFileSync(file, config(`d.txt, ${path.resolve(MORE)}`));
  await runPipeline({ resolved: await resolved(file) });
  const out = path.join(dir, 'out');
  // Stage 2 trained but its fused model gone (Ctrl-C while fusing): the run would fuse it again
  // (the same model: fusion is deterministic), and then find stage 3 complete: nothing to train.
  rmSync(path.join(out, 'stages', '2', 'model'), { recursive: true });
  const fusing = await planRun({ resolved: await resolved(file) });
  expect(fusing.lines.map((l) => [l.complete, l.fuse, l.next, l.toTrain])).toEqual([[[1, 3], [2], null, 0]]);
  // The run itself: stage 2 fused again, not trained (training is deterministic, so the same bytes
  // would not show it: its record and trained tensors are the same files, untouched); stage 3 skipped.
  const files = (n: number) => ['apex_run.json', 'trained.safetensors'].map((f) => { const st = statSync(path.join(out, 'stages', String(n), f)); return `${st.ino}:${st.mtimeMs}`; });
  const two = files(2);
  const log: string[] = [];
  await runPipeline({ resolved: await resolved(file), log: (m) => log.push(m) });
  expect(files(2)).toEqual(two);
  expect(existsSync(path.join(out, 'stages', '2', 'model', 'model.safetensors'))).toBe(true);
  expect(log).toContain('vanilla stage 3: complete, skipped (stages/3)');
  // Stage 2 undone: the plan resumes at it, and stage 3 trains again after it.
  rmSync(path.join(out, 'stages', '2'), { recursive: true });
  const before = fingerprint(out);
  const plan = await planRun({ resolved: await resolved(file) });
  expect(plan.start).toBe('resumed');
  expect(plan.lines.map((l) => [l.complete, l.fuse, l.next, l.stage.stage, l.toTrain])).toEqual([[[1], [], 2, 2, 128]]);
  appendFileSync(path.join(dir, 'd.txt'), '\n\nA paragraph appended after the run began.\n');
  expect(await code(planRun({ resolved: await resolved(file) }))).toBe('RUN_INPUT_CHANGED');
  expect(await code(runPipeline({ resolved: await resolved(file) }))).toBe('RUN_INPUT_CHANGED');
  expect(fingerprint(out)).toEqual(before);
});

it('--force: a folder holding the run\'s own data is refused, one holding anything else would be discarded (and is not)', async () => {
  const { dir, file } = configFolder('');
  const out = path.join(dir, 'out');
  mkdirSync(out);
  copyFileSync(TEXT, path.join(out, 'd.txt'));
  writeFileSync(file, config(`out/d.txt, ${path.resolve(MORE)}`));
  expect(await code(planRun({ resolved: await resolved(file), force: true }))).toBe('OUTPUT_HOLDS_INPUT');
  copyFileSync(TEXT, path.join(dir, 'd.txt'));
  writeFileSync(file, config(`d.txt, ${path.resolve(MORE)}`));
  expect(await code(planRun({ resolved: await resolved(file) }))).toBe('OUTPUT_EXISTS');
  const before = fingerprint(out);
  expect((await planRun({ resolved: await resolved(file), force: true })).start).toBe('restarted');
  expect(fingerprint(out)).toEqual(before);
});

it('a stage interrupted after one whose fused model is gone: fused again first, then the stage resumes at its checkpoint', async () => {
  const { dir, file } = configFolder('');
  copyFileSync(TEXT, path.join(dir, 'd.txt'));
  writeFileSync(file, config(`d.txt, ${path.resolve(MORE)}`).replace('steps: 1 }', 'steps: 2 }') + '\ncheckpoint: { every: 1 }');
  // Stage 3 stopped after its first step (checkpoint at step 1), then stage 2's fused model removed.
  const abort = new AbortController();
  const interrupted = await runPipeline({ resolved: await resolved(file), signal: abort.signal, status: (m) => { if (/^vanilla stage 3: step 1\//.test(m)) abort.abort(); } }).catch((e: unknown) => e);
  expect((interrupted as UsageError).code).toBe('INTERRUPTED');
  rmSync(path.join(dir, 'out', 'stages', '2', 'model'), { recursive: true });
  const plan = await planRun({ resolved: await resolved(file) });
  // 2 steps of 2 × 32 tokens per stage; stage 3 has one step left.
  expect(plan.lines.map((l) => [l.complete, l.fuse, l.next, l.resumeStep, l.toTrain])).toEqual([[[1], [2], 3, 1, 64]]);
  const log: string[] = [];
  await runPipeline({ resolved: await resolved(file), log: (m) => log.push(m), status: (m) => log.push(m) });
  expect(log.some((m) => /resuming stage 3 from step 1/.test(m))).toBe(true);
});

it('sizes the run\'s analysis: a max_memory the training stage and the evaluations fit but the analysis does not is refused as the run refuses it, naming the config keys', async () => {
  // stories260K (no tokenizer: ids) with operators, batch 1: training needs less than the
  // analysis, which reads one sequence at a time but keeps the hidden states of all its 1,000
  // (16 kB each; the evaluation those of its 4) and statistics.
  const { dir, file } = configFolder('');
  const ids = path.join(dir, 'ids.safetensors');
  await writeSafetensors(ids, [i32Tensor('input_ids', [1100, 32], Int32Array.from({ length: 1100 * 32 }, (_, i) => (7 * Math.floor(i / 32) + 3 * (i % 32)) % 500 + 1))]);
  const apex = (extra: string) => [`model: ${path.resolve('fixtures/stories260K')}`, 'backend: wasm', 'method: apex', 'setting: operators', 'data:', '  train_input_ids: ids.safetensors', '  seq_len: 32', '  eval_samples: 4', '  calibration_samples: 1000', 'stages: { count: 1, steps: 1 }', 'optimizer: { lr: 0.001, batch_size: 1 }', 'eval: { every: null, batch_size: 4 }', 'baseline: { vanilla: false }', 'output: out', extra].join('\n');
  writeFileSync(file, apex(''));
  const plan = await planRun({ resolved: await resolved(file) });
  const analysis = plan.analysis!.memory;
  expect(plan.analysis!.sequences).toBe(1000);
  expect(analysis.forward.chunkSequences).toBe(1);
  expect(plan.lines[0]!.stage.plan!.memory.totalBytes).toBeLessThan(analysis.totalBytes);
  writeFileSync(file, apex(`max_memory: ${analysis.totalBytes - 1}`));
  const dry = await planRun({ resolved: await resolved(file) }).catch((e: unknown) => e);
  expect((dry as UsageError).code).toBe('MEMORY_BUDGET');
  expect((dry as Error).message).toMatch(/^memory estimate .*; that is more than max_memory .* Raise max_memory, or use fewer \(data.calibration_samples\) or shorter sequences or a smaller optimizer.batch_size$/);
  expect(existsSync(path.join(dir, 'out'))).toBe(false);
  // The run evaluates the base model first (within that budget), then refuses the analysis.
  const log: string[] = [];
  const real = await runPipeline({ resolved: await resolved(file), log: (m) => log.push(m) }).catch((e: unknown) => e);
  expect(log.some((m) => m.startsWith('before training: held-out perplexity'))).toBe(true);
  expect((real as Error).message).toBe((dry as Error).message);
});
