// The model's files are hashed for the records (analysis.json, apex_run.json, summary.json) and
// copied into outputs: a file of the model folder that is a device (a link to /dev/zero) was
// hashed, or copied, without end.
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { sha256OfFile } from '../../src/pipeline/analysis-provenance.js';
import { copyModelFiles } from '../../src/io/model-files.js';
import { tempDir } from './helpers.js';

it('a device is refused, naming the file; a regular file is hashed', async () => {
  const dir = await tempDir('apex-hash-device-');
  symlinkSync('/dev/zero', join(dir, 'tokenizer.model'));
  await expect(sha256OfFile(join(dir, 'tokenizer.model'))).rejects.toMatchObject({ code: 'NOT_A_FILE', exit: 3, message: expect.stringContaining(`${join(dir, 'tokenizer.model')}: not a regular file`) });
  // sha256 of the three bytes "abc" (FIPS 180-2 test vector)
  const { writeFileSync } = await import('node:fs');
  writeFileSync(join(dir, 'abc'), 'abc');
  expect(await sha256OfFile(join(dir, 'abc'))).toMatchObject({ bytes: 3, sha256: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' });
});

it('copying the model files refuses a device among them, naming it', async () => {
  const dir = await tempDir('apex-copy-device-');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(join(dir, 'in'));
  mkdirSync(join(dir, 'out'));
  writeFileSync(join(dir, 'in', 'config.json'), '{}');
  symlinkSync('/dev/zero', join(dir, 'in', 'tokenizer.model'));
  await expect(copyModelFiles(join(dir, 'in'), join(dir, 'out'))).rejects.toMatchObject({ code: 'NOT_A_FILE', message: expect.stringContaining(`${join(dir, 'in', 'tokenizer.model')}: not a regular file`) });
});
