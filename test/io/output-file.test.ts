// Single-file outputs (--dump-stats, --ids-out) are checked before any work: a folder, a path
// inside the model folder, or an existing file without --force are refused, naming the flag.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkOutputFile } from '../../src/io/output-file.js';

const dir = mkdtempSync(join(tmpdir(), 'apex-output-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'model');
mkdirSync(model);
writeFileSync(join(model, 'model.safetensors'), 'weights');
writeFileSync(join(dir, 'old.safetensors'), 'old');

const refusal = (path: string, force = false) => {
  try {
    checkOutputFile(path, { flag: '--ids-out', protectedFolders: [{ label: 'the model folder', path: model }], force });
  } catch (e) {
    return { code: (e as { code?: string }).code, exit: (e as { exit?: number }).exit, message: (e as Error).message };
  }
  return undefined;
};

describe('checkOutputFile', () => {
  it('accepts a new file and returns its absolute path', () => {
    expect(checkOutputFile(join(dir, 'new.safetensors'), { flag: '--ids-out', force: false })).toBe(join(dir, 'new.safetensors'));
  });

  it("refuses the model's own weight file, with or without --force, and any new file in the model folder", () => {
    for (const force of [false, true]) {
      expect(refusal(join(model, 'model.safetensors'), force)).toEqual({
        code: 'OUTPUT_HOLDS_INPUT',
        exit: 2,
        message: `--ids-out ${join(model, 'model.safetensors')} lies inside the model folder (${model}); write it elsewhere`,
      });
    }
    expect(refusal(join(model, 'calib.safetensors'))?.code).toBe('OUTPUT_HOLDS_INPUT');
  });

  it('refuses an existing file without --force, and replaces it with', () => {
    expect(refusal(join(dir, 'old.safetensors'))).toEqual({ code: 'OUTPUT_EXISTS', exit: 2, message: `--ids-out ${join(dir, 'old.safetensors')} exists; pass --force to replace it` });
    expect(refusal(join(dir, 'old.safetensors'), true)).toBeUndefined();
  });

  it('refuses a folder', () => {
    expect(refusal(dir, true)).toEqual({ code: 'OUTPUT_NOT_A_FILE', exit: 2, message: `--ids-out ${dir} is a folder; give the path of a file to write` });
  });
});
