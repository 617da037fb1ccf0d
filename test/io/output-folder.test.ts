// An output folder that cannot be created is an output problem (exit 2, OUTPUT_NOT_WRITABLE)
// naming the folder that refuses it, also under a read-only mount, where Node's recursive
// mkdir reports ENOENT (which would otherwise read as "input not found", exit 3).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeOutputFolder } from '../../src/io/atomic-output.js';
import { tempDir } from './helpers.js';

/** A read-only tmpfs, where this machine allows mounting one (root in a container that permits it). */
function readOnlyMount(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts) {
    try {
      execFileSync('umount', [m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    rmSync(m, { recursive: true, force: true });
  }
});

describe('makeOutputFolder', () => {
  it.runIf(process.platform === 'linux')('refuses /proc and /sys at once (Node\'s recursive mkdir spins forever on some /proc paths)', async () => {
    for (const path of ['/proc/forbidden/x', '/sys/kernel/apex-out']) {
      await expect(makeOutputFolder(path)).rejects.toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2, message: expect.stringMatching(/kernel pseudo file system$/) });
    }
  });

  it('creates missing parents, and names a file in the way', async () => {
    const root = await tempDir('apex-outdir-');
    await makeOutputFolder(join(root, 'a', 'b', 'c'));
    writeFileSync(join(root, 'file'), 'x');
    await expect(makeOutputFolder(join(root, 'file', 'run'))).rejects.toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
  });

  const dir = join('/tmp', `apex-ro-${process.pid}`);
  const mounted = readOnlyMount(dir);
  if (mounted) mounts.push(dir);
  it.skipIf(!mounted)('under a read-only mount: exit 2 naming the mount, not ENOENT as a missing input', async () => {
    await expect(makeOutputFolder(join(dir, 'runs', 'r1'))).rejects.toMatchObject({
      code: 'OUTPUT_NOT_WRITABLE',
      exit: 2,
      message: `${join(dir, 'runs', 'r1')}: cannot create the output folder, ${dir} is not writable (ENOENT)`,
    });
  });
});
