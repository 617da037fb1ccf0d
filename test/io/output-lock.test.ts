// A folder inside one that another live apex process is writing is refused (OUTPUT_LOCKED);
// this process's own enclosing lock (apex run → its analysis) and a dead process's do not count.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireOutputLock, lockPathFor } from '../../src/io/output-lock.js';
import { tempDir } from './helpers.js';

const lockText = (pid: number, startedAt = new Date().toISOString()) => `${JSON.stringify({ pid, hostname: hostname(), startedAt, command: 'apex finetune' })}\n`;

describe('one lock per real folder', () => {
  it('a symbolic link to an output another process is writing is refused; the lock itself stays beside the name given', async () => {
    const root = await tempDir('apex-lock-');
    const run = join(root, 'run');
    await mkdir(run);
    await symlink(run, join(root, 'link'));
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      await writeFile(lockPathFor(run), lockText(child.pid!));
      for (const viaLink of [join(root, 'link'), join(root, 'link', 'stages', '..')]) {
        await expect(acquireOutputLock(viaLink)).rejects.toMatchObject({ code: 'OUTPUT_LOCKED', message: expect.stringContaining(`is a link to ${run}, which apex process ${child.pid} is writing`) });
      }
      expect(existsSync(lockPathFor(join(root, 'link')))).toBe(false);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill();
      await exited;
    }
    const lock = await acquireOutputLock(join(root, 'link'));
    expect(lock.path).toBe(join(root, 'link.lock'));
    await lock.release();
  });

  it('an output taken through a link also locks the folder it points to: a process naming that folder is refused, and both locks go at release', async () => {
    const root = await tempDir('apex-lock-');
    const run = join(root, 'run');
    await mkdir(run);
    await symlink(run, join(root, 'link'));
    const viaLink = await acquireOutputLock(join(root, 'link'));
    expect(existsSync(lockPathFor(join(root, 'link')))).toBe(true);
    expect(existsSync(lockPathFor(run))).toBe(true);
    // Another process naming the folder itself (a child, so the lock is not this process's own).
    const script = `import(${JSON.stringify(new URL('../../src/io/output-lock.ts', import.meta.url).href)}).then((m) => m.acquireOutputLock(${JSON.stringify(run)})).then(() => console.log('taken'), (e) => console.log(e.code))`;
    const other = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8' });
    expect(other.stdout.trim(), other.stderr).toBe('OUTPUT_LOCKED');
    await viaLink.release();
    expect(existsSync(lockPathFor(join(root, 'link')))).toBe(false);
    expect(existsSync(lockPathFor(run))).toBe(false);
    // This process may take the folder itself afterwards, and the link while it holds it
    // (its own lock covers the target).
    const direct = await acquireOutputLock(run);
    const again = await acquireOutputLock(join(root, 'link'));
    await again.release();
    expect(existsSync(lockPathFor(run)), 'the target lock stays its holder\'s').toBe(true);
    await direct.release();
  });
});

describe('stale locks', () => {
  it('a lock whose PID now belongs to a process that started after it was taken (a reused PID) is taken over', async () => {
    const root = await tempDir('apex-lock-');
    const out = join(root, 'out');
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      await new Promise((r) => setTimeout(r, 200));
      await writeFile(lockPathFor(out), lockText(child.pid!, new Date(Date.now() - 3_600_000).toISOString()));
      const warnings: string[] = [];
      const lock = await acquireOutputLock(out, { onWarning: (m) => warnings.push(m) });
      await lock.release();
      expect(warnings).toEqual([`took over the stale lock ${lockPathFor(out)} left by process ${child.pid} (no longer running)`]);
      // the same PID with a lock taken after it started is its live owner
      await writeFile(lockPathFor(out), lockText(child.pid!));
      await expect(acquireOutputLock(out)).rejects.toMatchObject({ code: 'OUTPUT_LOCKED' });
    } finally {
      child.kill();
    }
  });
});

describe('locks of enclosing folders', () => {
  it('refuses a folder inside a live process\'s output, naming it; allows it under its own or a dead process\'s lock', async () => {
    const root = await tempDir('apex-lock-');
    const run = join(root, 'run');
    const inner = join(run, 'analysis');
    await mkdir(run, { recursive: true });
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      await writeFile(lockPathFor(run), lockText(child.pid!));
      const refused = await acquireOutputLock(inner).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: 'OUTPUT_LOCKED', exit: 2, message: expect.stringContaining(`output ${inner} lies inside ${run}, which apex process ${child.pid} is writing`) });
      expect(existsSync(lockPathFor(inner))).toBe(false); // its own lock was given back
    } finally {
      child.kill();
    }
    for (const pid of [process.pid, spawnSync(process.execPath, ['-e', '0']).pid!]) {
      await writeFile(lockPathFor(run), lockText(pid));
      const lock = await acquireOutputLock(inner);
      await lock.release();
    }
  });
});
