/**
 * `apex run` with pre-tokenized data (data.*_input_ids, data.train_samples): the sets are the
 * ones finetune's --input-ids/--samples, eval's and analyze's --input-ids give; a model without
 * a tokenizer is accepted when every set is ids; the ids files are part of the run's identity.
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../../src/errors.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { checkDataPaths, checkRunTokenizer, loadRunData } from '../../src/pipeline/run-data.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { RunState } from '../../src/pipeline/run-state.js';
import { resolveConfig } from '../../src/run/config.js';
import { loadSequences } from '../../src/train/data.js';
import { loadStageData } from '../../src/train/stage-flags.js';
import { MODEL } from './run-fixtures.js';

/** A [rows, width] I32 ids file whose token at (r, t) is (3r + t + offset) mod 200 (rows differ while rows ≤ 66). */
async function idsFile(dir: string, name: string, rows: number, width: number, offset = 0): Promise<string> {
  const file = path.join(dir, name);
  await writeSafetensors(file, [i32Tensor('input_ids', [rows, width], Int32Array.from({ length: rows * width }, (_, i) => (3 * Math.floor(i / width) + (i % width) + offset) % 200))]);
  return file;
}

async function config(dir: string, overrides: string[]) {
  return (await resolveConfig({ overrides: [`model=${MODEL}`, `output=${path.join(dir, 'run')}`, 'data.seq_len=12', ...overrides], cwd: dir })).config;
}

const rowsOf = (set: { sequences: Int32Array[] }) => set.sequences.map((s) => Array.from(s));

describe('apex run: token ids', () => {
  it('training ids with data.train_samples and data.eval_samples give the sets of apex finetune --input-ids --samples --eval-samples', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-ids-'));
    const file = await idsFile(dir, 'train.safetensors', 60, 16);
    const c = await config(dir, [`data.train_input_ids=${file}`, 'data.train_samples=20', 'data.eval_samples=2', 'data.calibration_samples=5']);
    expect(c.data.train).toBeNull();
    const run = await loadRunData(c, undefined);
    const finetune = await loadStageData({ 'input-ids': file, 'seq-len': 12, seed: 0, samples: 20, 'eval-samples': 2 }, undefined);
    expect(rowsOf(run.train)).toEqual(rowsOf(finetune.train));
    expect(rowsOf(run.eval)).toEqual(rowsOf(finetune.eval));
    expect(run.train.sequences).toHaveLength(20);
    expect(run.train.sequences.every((s) => s.length === 12)).toBe(true);
    // Held-out rows are not trained on; the calibration sample comes from what is trained.
    const trained = new Set(rowsOf(run.train).map((r) => r.join()));
    expect(rowsOf(run.eval).some((r) => trained.has(r.join()))).toBe(false);
    expect(run.calibration!.sequences).toHaveLength(5);
    expect(rowsOf(run.calibration!).every((r) => trained.has(r.join()))).toBe(true);
    expect(run.train.source).toMatchObject({ kind: 'input-ids', paths: [file], sha256: [createHash('sha256').update(readFileSync(file)).digest('hex')], samples: 20 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('separate held-out and calibration ids are read whole (split all), as apex eval and apex analyze --input-ids read them', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-ids-'));
    const train = await idsFile(dir, 'train.safetensors', 30, 16);
    const heldOut = await idsFile(dir, 'eval.safetensors', 7, 10, 5);
    const calibration = await idsFile(dir, 'calibration.safetensors', 9, 16, 7);
    const c = await config(dir, [`data.train_input_ids=${train}`, `data.eval_input_ids=${heldOut}`, `data.calibration_input_ids=${calibration}`, 'data.calibration_samples=4']);
    const run = await loadRunData(c, undefined);
    expect(run.train.sequences).toHaveLength(30); // nothing held out of it
    expect(rowsOf(run.eval)).toEqual(rowsOf(await loadSequences({ inputIds: heldOut, seqLen: 12, seed: 0 })));
    expect(run.eval.seqLen).toBe(10); // a file narrower than seq_len sets the length, as --input-ids
    expect(rowsOf(run.calibration!)).toEqual(rowsOf(await loadSequences({ inputIds: calibration, seqLen: 12, samples: 4, seed: 0 })));
    rmSync(dir, { recursive: true, force: true });
  });

  it('a model without a tokenizer is refused only for text sets, naming the keys to give as ids; missing ids files are named', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-ids-'));
    const file = await idsFile(dir, 'train.safetensors', 10, 16);
    const idsOnly = await config(dir, [`data.train_input_ids=${file}`]);
    expect(() => checkRunTokenizer(undefined, '/m', idsOnly)).not.toThrow();
    const mixed = await config(dir, [`data.train_input_ids=${file}`, `data.eval=${file}`]);
    const err = (() => { try { checkRunTokenizer(undefined, '/m', mixed); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(UsageError);
    expect(err).toMatchObject({ code: 'NO_TOKENIZER' });
    expect((err as Error).message).toBe('/m has no tokenizer.json, so the text data of data.eval cannot be tokenized; give it as token ids instead (data.eval_input_ids: a safetensors file of I32/I64 [B, T] ids, as --input-ids of apex finetune)');
    const missing = await checkDataPaths(await config(dir, [`data.train_input_ids=${path.join(dir, 'nope.safetensors')}`])).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(InputError);
    expect((missing as Error).message).toBe(`data.train_input_ids: no such file ${path.join(dir, 'nope.safetensors')}`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the ids files are part of the run: another path is another config, a changed file is refused on resume (model without tokenizer)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-ids-'));
    const model = path.join(dir, 'model');
    cpSync(MODEL, model, { recursive: true, filter: (p) => !path.basename(p).startsWith('tokenizer') && !path.basename(p).startsWith('special_tokens') });
    const file = await idsFile(dir, 'train.safetensors', 40, 16);
    const c = await config(dir, [`model=${model}`, `data.train_input_ids=${file}`, 'backend=wasm']);
    const state = await RunState.open(c.output, c, { force: false, apexVersion: 'test' });
    const data = await loadRunData(c, undefined);
    await state.complete('data', 0, { train: data.train.source, eval: data.eval.source, calibration: data.calibration?.source ?? null });

    const other = await idsFile(dir, 'other.safetensors', 40, 16);
    const moved = await RunState.open(c.output, await config(dir, [`model=${model}`, `data.train_input_ids=${other}`, 'backend=wasm']), { force: false, apexVersion: 'test' }).catch((e: unknown) => e);
    expect(moved).toMatchObject({ code: 'RUN_CONFIG_CHANGED' });
    expect((moved as Error).message).toContain('changed: data.train_input_ids)');

    await idsFile(dir, 'train.safetensors', 40, 16, 1); // same shape, other ids
    const resolved = await resolveConfig({ overrides: [`model=${model}`, `output=${c.output}`, 'data.seq_len=12', `data.train_input_ids=${file}`, 'backend=wasm'], cwd: dir });
    const changed = await runPipeline({ resolved }).catch((e: unknown) => e);
    expect(changed).toMatchObject({ code: 'RUN_INPUT_CHANGED' });
    expect((changed as Error).message).toMatch(/the data of .* changed since the run began: train: .*train\.safetensors/);
    rmSync(dir, { recursive: true, force: true });
  });
});
