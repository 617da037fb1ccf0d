// The base-model record of `apex run`: the sha256 of the config, tokenizer and generation files
// and of every weight file, read again on every invocation, so that a resumed run notices a
// tokenizer edited in place and a model replaced with its size and modification time kept.
import { createHash } from 'node:crypto';
import { cp, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { baseModelRecord, resolveBaseModel } from '../../src/pipeline/run-model.js';
import { tempDir } from '../io/helpers.js';

const sha = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

describe('baseModelRecord', () => {
  it('hashes the config, tokenizer and weight files, and sees a same-size replacement whose time was kept', async () => {
    const dir = join(await tempDir('apex-base-'), 'model');
    await cp('fixtures/llama-mha-f32', dir, { recursive: true });
    const base = await resolveBaseModel(dir, {});
    const first = await baseModelRecord(base, {});
    expect(first.files.map((f) => f.file)).toEqual(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors']);
    for (const f of first.files) expect(f.sha256, f.file).toBe(await sha(join(dir, f.file)));

    // tokenizer.json edited in place (two ids swapped: same size), its time set back, as `cp -p` / `rsync -a` keep it.
    const path = join(dir, 'tokenizer.json');
    const before = await stat(path);
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.replace('"<unk>": 0', '"<unk>": 9').replace('"<s>": 1', '"<s>": 0').replace('"<unk>": 9', '"<unk>": 1'));
    await utimes(path, before.atime, before.mtime);
    expect((await stat(path)).size).toBe(before.size);
    const again = await baseModelRecord(base, {});
    const changed = again.files.filter((f, i) => f.sha256 !== first.files[i]!.sha256).map((f) => f.file);
    expect(changed).toEqual(['tokenizer.json']);
  });
});
