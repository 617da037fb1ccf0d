// Single-file outputs (--dump-stats, --ids-out) are checked before any work: a folder, a path
// inside the model folder, an existing file without --force, or a path through a file are
// refused, naming the flag. Missing parent folders are created, as -o a/b/c creates them.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { checkOutputFile, makeOutputFileFolder } from '../../src/io/output-file.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

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

  it('accepts a file in folders that do not exist yet, and creates them when it is written', async () => {
    const deep = join(dir, 'a', 'b', 'c', 'ids.safetensors');
    expect(refusal(deep)).toBeUndefined();
    await makeOutputFileFolder(deep);
    expect(statSync(join(dir, 'a', 'b', 'c')).isDirectory()).toBe(true);
    await makeOutputFileFolder(deep); // an existing folder is fine
  });

  it('refuses a path that runs through a file, before any work', () => {
    expect(refusal(join(dir, 'old.safetensors', 'x', 'ids.safetensors'))).toEqual({
      code: 'OUTPUT_NOT_WRITABLE',
      exit: 2,
      message: `--ids-out ${join(dir, 'old.safetensors', 'x', 'ids.safetensors')}: cannot write there, ${join(dir, 'old.safetensors')} is a file, not a folder`,
    });
  });

  it('refuses a folder', () => {
    expect(refusal(dir, true)).toEqual({ code: 'OUTPUT_NOT_A_FILE', exit: 2, message: `--ids-out ${dir} is a folder; give the path of a file to write` });
  });
});

describe('--ids-out and --dump-stats into folders that do not exist yet (built CLI)', () => {
  const apex = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin', 'run.js'), ...args, '--json'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });

  it('generate --ids-out creates the parent folders', () => {
    const out = join(dir, 'gen', 'x', 'y', 'ids.safetensors');
    const r = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '1', '--ids-out', out, '--backend', 'wasm']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(existsSync(out)).toBe(true);
  });

  it('analyze --dump-stats creates the parent folders', () => {
    const dump = join(dir, 'dump', 'x', 'stats.safetensors');
    const r = apex(['analyze', 'fixtures/llama-mha-f32', '--samples', '4', '--batch-size', '2', '--backend', 'wasm', '--dump-stats', dump, '-o', join(dir, 'analysis')]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(existsSync(dump)).toBe(true);
  });
});
