// The base-model record of `apex run`: hashes are reused on resume only while the files are
// unchanged since they were hashed (same size, not modified after), otherwise read again.
import { cp, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { baseModelRecord, resolveBaseModel } from '../../src/pipeline/run-model.js';
import { tempDir } from '../io/helpers.js';

describe('baseModelRecord', () => {
  it('reuses an earlier record of unchanged files and re-hashes a file modified since', async () => {
    const dir = join(await tempDir('apex-base-'), 'model');
    await cp('fixtures/llama-mha-f32', dir, { recursive: true });
    const base = await resolveBaseModel(dir, {});
    const first = await baseModelRecord(base, {});
    expect(first.hashedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(await baseModelRecord(base, { known: first })).toBe(first);

    // Same size, new content, written after the record was made (as an in-place overwrite).
    const config = join(dir, 'config.json');
    const text = await readFile(config, 'utf8');
    await writeFile(config, text.replace('"rms_norm_eps"', '"rms_norm_EPS"'));
    const later = new Date(Date.parse(first.hashedAt!) + 5_000);
    await utimes(config, later, later);
    const again = await baseModelRecord(base, { known: first });
    expect(again).not.toBe(first);
    expect(again.files[0]!.sha256).not.toBe(first.files[0]!.sha256);
    expect(again.files[1]!.sha256).toBe(first.files[1]!.sha256);

    // A record of an older apex without hashedAt is never trusted.
    const { hashedAt: _, ...old } = again;
    expect(await baseModelRecord(base, { known: old })).not.toBe(old);
  });
});
