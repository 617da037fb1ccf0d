// An output that --force replaces must not hold the command's inputs (they would be deleted).
import { mkdirSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isInside, refuseInputsInsideOutput } from '../../src/io/output-inputs.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { resolveConfig } from '../../src/run/config.js';
import { runExpand } from '../../src/pipeline/expand.js';
import { writeSafetensors } from '../../src/io/safetensors-writer.js';
import { tempDir } from './helpers.js';
import { cpSync } from 'node:fs';

describe('inputs inside an output folder', () => {
  it('isInside: the folder itself and anything below it, through symlinks, not siblings or ..-names', async () => {
    const root = await tempDir('apex-inside-');
    mkdirSync(join(root, 'out', 'model'), { recursive: true });
    mkdirSync(join(root, 'out-2'));
    mkdirSync(join(root, 'out', '..x'));
    symlinkSync(join(root, 'out', 'model'), join(root, 'link'));
    expect(isInside(join(root, 'out'), join(root, 'out'))).toBe(true);
    expect(isInside(join(root, 'out', 'model'), join(root, 'out'))).toBe(true);
    expect(isInside(join(root, 'out', '..x'), join(root, 'out'))).toBe(true);
    expect(isInside(join(root, 'link'), join(root, 'out'))).toBe(true);
    expect(isInside(join(root, 'out-2'), join(root, 'out'))).toBe(false);
    expect(isInside(root, join(root, 'out'))).toBe(false);
    expect(() => refuseInputsInsideOutput(join(root, 'out'), [{ label: 'the model', path: join(root, 'link') }])).toThrow(/--force would replace .*out, which holds the model/);
    expect(() => refuseInputsInsideOutput(join(root, 'out'), [{ label: 'the model', path: join(root, 'out-2') }])).not.toThrow();
  });

  it('apex run --force and apex expand refuse an output folder holding their model, which stays intact', async () => {
    const root = await tempDir('apex-inside-run-');
    const model = join(root, 'out', 'model');
    cpSync('fixtures/llama-mha-f32', model, { recursive: true });
    writeFileSync(join(root, 'run.yaml'), `model: ${model}\nbackend: wasm\ndata: { train: builtin:out-of-domain, seq_len: 16 }\nstages: { count: 1, steps: 1 }\n`);
    const resolved = await resolveConfig({ file: join(root, 'run.yaml'), overrides: [`output=${join(root, 'out')}`], cwd: root });
    const err = await runPipeline({ resolved, force: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'OUTPUT_HOLDS_INPUT', exit: 2, message: expect.stringContaining('which holds the model') });
    expect(existsSync(join(model, 'model.safetensors'))).toBe(true);
    const updates = join(root, 'trained.safetensors');
    await writeSafetensors(updates, [{ name: 'model.norm.weight', dtype: 'F32', shape: [128], data: new Uint8Array(512) }]);
    const expanded = await runExpand({ model, updates, output: join(root, 'out'), force: true }).catch((e: unknown) => e);
    expect(expanded).toMatchObject({ code: 'OUTPUT_HOLDS_INPUT', message: expect.stringContaining('-o/--output would replace') });
    expect(existsSync(join(model, 'model.safetensors'))).toBe(true);
  });

  it('an output folder that is or holds the working folder or the home folder is refused (it would be replaced whole); expand -o . --force left the folder intact', async () => {
    const root = await tempDir('apex-inside-cwd-');
    const work = join(root, 'work');
    mkdirSync(work);
    writeFileSync(join(work, 'notes.txt'), 'mine');
    const { homedir } = await import('node:os');
    const before = process.cwd();
    process.chdir(work);
    try {
      expect(() => refuseInputsInsideOutput('.', [])).toThrow(/--force would replace .*work, which holds the current working folder/);
      expect(() => refuseInputsInsideOutput('', [])).toThrow(/which holds the current working folder/);
      expect(() => refuseInputsInsideOutput(root, [])).toThrow(/which holds the current working folder/);
      expect(() => refuseInputsInsideOutput(join(work, 'out'), [])).not.toThrow();
      expect(() => refuseInputsInsideOutput(homedir(), [])).toThrow(/which holds your home folder/);
      const updates = join(root, 'trained.safetensors');
      await writeSafetensors(updates, [{ name: 'model.norm.weight', dtype: 'F32', shape: [128], data: new Uint8Array(512) }]);
      const model = join(before, 'fixtures/llama-mha-f32');
      const expanded = await runExpand({ model, updates, output: '.', force: true }).catch((e: unknown) => e);
      expect(expanded).toMatchObject({ code: 'OUTPUT_HOLDS_INPUT', exit: 2 });
      expect(existsSync(join(work, 'notes.txt'))).toBe(true);
    } finally {
      process.chdir(before);
    }
  });
});
