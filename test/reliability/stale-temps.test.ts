// Work in progress left by SIGKILLed writers (issue 8, crash safety): taking an output's lock
// removes the temporaries whose writer PID is dead, next to the output and inside a run folder,
// puts back a complete output that a killed process had moved aside, and never touches a live
// process's temporary or a folder that is not apex's.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireOutputLock } from '../../src/io/output-lock.js';
import { inProgressName } from '../../src/io/stale-temps.js';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { tempDir } from '../io/helpers.js';

/** A PID that is certainly not running: a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

async function lockAndSweep(out: string): Promise<string[]> {
  const warnings: string[] = [];
  const lock = await acquireOutputLock(out, { command: 'test', onWarning: (m) => warnings.push(m) });
  await lock.release();
  return warnings;
}

describe('stale temporaries', () => {
  it('a run folder: dead writers\' temporaries go, live ones stay, next to it and inside it', async () => {
    const root = await tempDir('apex-stale-');
    const dead = deadPid();
    const out = join(root, 'run');
    const stage = join(out, 'stages', '1');
    await mkdir(join(stage, 'checkpoints'), { recursive: true });
    await writeFile(join(out, 'run.json'), '{}');
    const stale = [
      join(stage, `loss.svg.tmp-${dead}-0badc0de`),
      join(stage, `.metrics.jsonl.tmp-${dead}-0123abcd`),
      join(out, `run.json.tmp-${dead}-12345678`),
      join(root, `run.lock.${dead}-abcdef01`),
    ];
    const live = [join(stage, `apex_run.json.tmp-${process.pid}-0badc0de`), join(out, `summary.json.tmp-${process.pid}-00000001`)];
    for (const f of [...stale, ...live]) await writeFile(f, 'half');
    await mkdir(join(stage, 'checkpoints', `step-00000004.tmp-${dead}-aaaa0000`));
    await writeFile(join(stage, 'checkpoints', `step-00000004.tmp-${dead}-aaaa0000`, 'state.json'), '{');
    await mkdir(join(root, `run.tmp-${dead}-beefbeef`));

    const warnings = await lockAndSweep(out);
    for (const f of stale) expect(existsSync(f), f).toBe(false);
    expect(existsSync(join(stage, 'checkpoints', `step-00000004.tmp-${dead}-aaaa0000`))).toBe(false);
    expect(existsSync(join(root, `run.tmp-${dead}-beefbeef`))).toBe(false);
    for (const f of live) expect(await readFile(f, 'utf8'), f).toBe('half');
    expect(existsSync(join(out, 'run.json'))).toBe(true);
    expect(existsSync(`${out}.lock`)).toBe(false);
    expect(warnings.join('\n')).toContain(`cleaned up run/stages/1/loss.svg.tmp-${dead}-0badc0de left by an interrupted apex process`);
    expect(warnings).toHaveLength(6);
  });

  it('a complete output moved aside by a killed writer is put back when the output is missing, dropped otherwise', async () => {
    const root = await tempDir('apex-stale-');
    const dead = deadPid();
    const out = join(root, 'model');
    await mkdir(join(root, `model.old-${dead}-0000aaaa`));
    await writeFile(join(root, `model.old-${dead}-0000aaaa`, 'config.json'), 'old');
    await lockAndSweep(out);
    expect(await readFile(join(out, 'config.json'), 'utf8')).toBe('old');
    expect(existsSync(join(root, `model.old-${dead}-0000aaaa`))).toBe(false);

    await mkdir(join(root, `model.old-${dead}-0000bbbb`));
    await lockAndSweep(out);
    expect(existsSync(join(root, `model.old-${dead}-0000bbbb`))).toBe(false);
    expect(await readFile(join(out, 'config.json'), 'utf8')).toBe('old');
  });

  it('a folder that is not an apex run is not searched, and other outputs\' temporaries are not touched', async () => {
    const root = await tempDir('apex-stale-');
    const dead = deadPid();
    const out = join(root, 'mine');
    await mkdir(join(out, 'sub'), { recursive: true });
    const userFile = join(out, 'sub', `notes.txt.tmp-${dead}-12345678`);
    const otherOutput = join(root, `other.tmp-${dead}-12341234`);
    await writeFile(userFile, 'user data');
    await writeFile(otherOutput, 'x');
    expect(await lockAndSweep(out)).toEqual([]);
    expect(existsSync(userFile)).toBe(true);
    expect(existsSync(otherOutput)).toBe(true);
  });

  it('work-in-progress names carry the writer\'s PID and the final name', () => {
    expect(inProgressName(`loss.svg.tmp-${process.pid}-0badc0de`)).toEqual({ kind: 'tmp', target: 'loss.svg', pid: process.pid });
    expect(inProgressName(`.metrics.jsonl.tmp-${process.pid}-0123abcd`)).toEqual({ kind: 'tmp', target: '.metrics.jsonl', pid: process.pid });
    expect(inProgressName('run.lock.stale-42-abcd0123')).toEqual({ kind: 'lock', target: 'run.lock', pid: 42 });
    expect(inProgressName('model.safetensors')).toBeUndefined();
    expect(inProgressName('notes.tmp')).toBeUndefined();
    // a user's own names next to an output are not apex's work in progress
    for (const name of ['model.old-2023', 'model.tmp-7', 'model.old-2023-12', 'model.tmp-7-abc', 'run.lock.42-abcd', 'model.old-1-0BADC0DE']) {
      expect(inProgressName(name), name).toBeUndefined();
    }
  });
});

describe('stale temporaries of a single-file output', () => {
  it('writing the file removes what dead writers of it left, not a live writer\'s nor another file\'s', async () => {
    const dir = await tempDir();
    const dead = deadPid();
    const names = {
      deadOwn: `.ids.safetensors.tmp-${dead}-0badc0de`,
      liveOwn: `.ids.safetensors.tmp-${process.pid}-0badc0de`,
      deadOther: `.other.safetensors.tmp-${dead}-0badc0de`,
      user: '.ids.safetensors.tmp-7',
    };
    for (const n of Object.values(names)) await writeFile(join(dir, n), 'partial');
    await writeSafetensors(join(dir, 'ids.safetensors'), [i32Tensor('input_ids', [1, 2], Int32Array.of(1, 2))]);
    expect(existsSync(join(dir, names.deadOwn))).toBe(false);
    for (const n of [names.liveOwn, names.deadOther, names.user]) expect(existsSync(join(dir, n)), n).toBe(true);
    expect(existsSync(join(dir, 'ids.safetensors'))).toBe(true);
  });
});
