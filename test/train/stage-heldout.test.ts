// A stage whose held-out data is a split of its training data lists the held-out documents in
// stages/<n>/heldout.json (and its record points there, with the file's sha256 among the
// outputs): the rows it names are exactly the sequences the stage evaluated on.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { loadSequences } from '../../src/train/data.js';
import type { HeldoutDocuments } from '../../src/train/data-split.js';
import { runStage, type StageOptions } from '../../src/train/stage.js';
import { STORIES, storyChunks, tempRun } from './stage-fixtures.js';

const cleanups: (() => void)[] = [];
afterAll(() => cleanups.forEach((c) => c()));

describe('heldout.json', () => {
  it('lists the documents (rows) held out of the training data, exactly the stage\'s held-out set', async () => {
    const { dir: run, cleanup } = tempRun('heldout');
    cleanups.push(cleanup);
    const rows = (await storyChunks(16)).sequences.slice(0, 12);
    const data = tempRun('heldout-data');
    cleanups.push(data.cleanup);
    const ids = join(data.dir, 'ids.safetensors');
    await writeSafetensors(ids, [i32Tensor('input_ids', [rows.length, 16], Int32Array.from(rows.flatMap((r) => Array.from(r))))]);
    const common = { inputIds: ids, seqLen: 16, seed: 0, heldoutFraction: 0.25, splitSeed: 2 };
    const train = await loadSequences({ ...common, split: 'train' });
    const held = await loadSequences({ ...common, split: 'heldout' });
    const options: StageOptions = {
      model: STORIES, modelDir: STORIES, run, stage: 1, train, eval: held, steps: 1, batchSize: 2, lr: 1e-2,
      saveEvery: 0, evalEvery: 0, expand: false, backend: 'cpu', method: 'lora', loraRank: 2,
    };
    const result = await runStage(options);
    const stage = join(run, 'stages/1');
    const text = readFileSync(join(stage, 'heldout.json'), 'utf8');
    const written = JSON.parse(text) as HeldoutDocuments;
    expect(written).toMatchObject({ schema: 'apex.heldout/1', fraction: 0.25, seed: 2, documents: 12, heldout: 3 });
    expect(written.files).toHaveLength(1);
    expect(written.files[0]).toMatchObject({ path: ids, sha256: createHash('sha256').update(readFileSync(ids)).digest('hex'), documents: 12 });
    // Independent truth: the rows the file names, read from the ids themselves, are the held-out set.
    const named = written.files[0]!.heldout.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, k) => a + k));
    expect(named.map((r) => rows[r])).toEqual(held.sequences);
    expect(rows.filter((_, r) => !named.includes(r))).toEqual(train.sequences);
    // The record points at it and hashes it like the stage's other outputs.
    const record = JSON.parse(readFileSync(join(stage, 'apex_run.json'), 'utf8')) as { details: { data: { heldout_file?: string } }; outputs: { stage: { files: { file: string; sha256: string }[] } } };
    expect(record.details.data.heldout_file).toBe('heldout.json');
    expect(record.outputs.stage.files.find((f) => f.file === 'heldout.json')?.sha256).toBe(createHash('sha256').update(text).digest('hex'));
    expect(result.files).toContain('heldout.json');
  });
});
