// Up-front checks of an output folder (src/io/atomic-output.ts), before any work: a path that
// runs through a file, and an output folder that is a mount point, are exit 2
// OUTPUT_NOT_WRITABLE; a rename refused with EBUSY/EXDEV says so too. Mount points are
// simulated with injected stat results (no mount, no root).
import { lstat, mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApexError, toApexError } from '../../src/errors.js';
import { outputState, writeAtomicFolder } from '../../src/io/atomic-output.js';
import { ioError } from '../../src/io/io-error.js';

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

describe('an output folder that is a mount point', () => {
  /** stat as the real one, except that `mountPoint` reports another device than its parent. */
  const statWithMount = (mountPoint: string) => ({
    stat: async (p: string) => {
      const s = await stat(p);
      return p === mountPoint ? { dev: s.dev + 1, isDirectory: () => s.isDirectory() } : s;
    },
  });

  it('an empty or non-empty mount point is refused with OUTPUT_NOT_WRITABLE, asking for a subfolder', async () => {
    const out = join(dir, 'mnt');
    await mkdir(out);
    let e = await failure(outputState(out, statWithMount(out)));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(e.message).toContain('mount point');
    expect(e.message).toContain('subfolder');
    await writeFile(join(out, 'f'), 'x');
    e = await failure(outputState(out, statWithMount(out)));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
  });

  it('a folder on its parent\'s filesystem, and a subfolder of a mount point, are fine', async () => {
    const out = join(dir, 'mnt');
    await mkdir(join(out, 'sub'), { recursive: true });
    expect(await outputState(out)).toBe('present');
    // A subfolder of a mount point is on the mount point's filesystem: fine.
    const both = { stat: async (p: string) => { const s = await stat(p); return p === out || p === join(out, 'sub') ? { dev: s.dev + 1, isDirectory: () => true } : s; } };
    expect(await outputState(join(out, 'sub'), both)).toBe('empty');
  });

  it('where the system lists its mount points, they decide: a folder with its own device that is no mount point (a btrfs subvolume) is fine', async () => {
    const out = join(dir, 'subvolume');
    await mkdir(out, { recursive: true });
    const listed = (points: string[]) => ({ ...statWithMount(out), realpath: async (p: string) => p, mountPoints: async () => new Set(points) });
    expect(await outputState(out, listed([]))).toBe('empty');
    expect(await failure(outputState(out, listed([out])))).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE' });
  });

  it('an output given as a symbolic link is judged where it really is', async () => {
    // A link in dir/ to a folder of another filesystem (as /tmp/out -> /dev/shm/x/out).
    const other = join(dir, 'other-fs');
    const target = join(other, 'real-target');
    const link = join(dir, 'link-to-target');
    await mkdir(target, { recursive: true });
    await symlink(target, link);
    const otherDevice = { stat: async (p: string) => { const s = await stat(p); return p === other || p === target || p === link ? { dev: s.dev + 1, isDirectory: () => true } : s; } };
    expect(await outputState(link, { ...otherDevice, realpath })).toBe('empty');
    // Judged by the link's own folder it would have been called a mount point.
    expect(await failure(outputState(link, otherDevice))).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE' });
  });

  it('a rename refused with EBUSY or EXDEV is OUTPUT_NOT_WRITABLE naming the folder', () => {
    for (const code of ['EBUSY', 'EXDEV']) {
      const e = ioError('/mnt/out', 'move the previous output aside', Object.assign(new Error(code), { code })) as ApexError;
      expect(e, code).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
      expect(e.message, code).toContain('/mnt/out');
      expect(e.message, code).toContain('mount point');
    }
  });
});

describe('an output given as a symbolic link', () => {
  it('is written where the link points; the link stays a link', async () => {
    const target = join(dir, 'elsewhere', 'out');
    const link = join(dir, 'out-link');
    await mkdir(target, { recursive: true });
    await symlink(target, link);
    await writeAtomicFolder(link, {}, async (tmp) => { await writeFile(join(tmp, 'result.txt'), 'done'); });
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readFile(join(target, 'result.txt'), 'utf8')).toBe('done');
  });
});
