// Up-front checks of an output folder (src/io/atomic-output.ts), before any work: a path that
// runs through a file is exit 2 OUTPUT_NOT_WRITABLE.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApexError, toApexError } from '../../src/errors.js';
import { outputState, writeAtomicFolder } from '../../src/io/atomic-output.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apex-output-checks-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<ApexError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e, 'expected a failure').toBeDefined();
  return toApexError(e);
}

describe('an output path through a file', () => {
  it('outputState: OUTPUT_NOT_WRITABLE (exit 2) saying a part of the path is a file, not a raw ENOTDIR (exit 3)', async () => {
    await writeFile(join(dir, 'afile'), 'x');
    const e = await failure(outputState(join(dir, 'afile', 'x')));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(e.message).toContain('a part of the path is a file');
    expect(e.message).toContain(join(dir, 'afile', 'x'));
  });

  it('writeAtomicFolder: the same, and build never runs', async () => {
    await writeFile(join(dir, 'afile'), 'x');
    let built = false;
    const e = await failure(writeAtomicFolder(join(dir, 'afile', 'x'), {}, async () => { built = true; }));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(built).toBe(false);
  });
});
