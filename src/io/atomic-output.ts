/**
 * All-or-nothing output folders. Everything is written into a temporary sibling folder
 * `<out>.tmp-<pid>-<rand>` on the same filesystem, fsync'd, checked by a verification
 * callback, and only then renamed to `<out>`. Any failure (including Ctrl-C) removes the
 * temporary folder, so an output folder either does not exist or is complete and verified.
 * The whole operation holds the output lock (output-lock.ts); taking it cleans up what killed
 * processes left for the same output (stale-temps.ts).
 */
import { randomBytes } from 'node:crypto';
import { access, constants, lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { acquireOutputLock } from './output-lock.js';
import { fsyncDir } from './safetensors-writer.js';
import { ioError, nameTooLong } from './io-error.js';

export type OutputState = 'absent' | 'empty' | 'present';

/** What outputState asks the filesystem (injected by tests). */
export interface OutputStatFs {
  stat(path: string): Promise<{ dev: number; isDirectory(): boolean }>;
  /** Where a path really is (symbolic links followed); identity when absent. */
  realpath?(path: string): Promise<string>;
  /** The system's mount points, where it lists them (Linux); else the device numbers decide. */
  mountPoints?(): Promise<ReadonlySet<string> | undefined>;
}
const realStatFs: OutputStatFs = { stat, realpath, mountPoints: linuxMountPoints };

/** Mount points from /proc/self/mountinfo (its fifth field, octal escapes undone), or undefined. */
async function linuxMountPoints(): Promise<ReadonlySet<string> | undefined> {
  let text: string;
  try {
    text = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  const points = new Set<string>();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return points;
}

/**
 * Whether the output folder exists and holds anything. Refuses (exit 2, OUTPUT_NOT_WRITABLE) an
 * output whose path runs through a file, and an output folder that is a mount point: apex
 * builds the output in a sibling temporary folder (on the parent's filesystem) and renames it
 * into place, which a mount point can neither be moved aside for (EBUSY) nor take (EXDEV).
 */
export async function outputState(outDir: string, fs: OutputStatFs = realStatFs): Promise<OutputState> {
  let st: Awaited<ReturnType<OutputStatFs['stat']>>;
  try {
    st = await fs.stat(outDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'absent';
    if (code === 'ENOTDIR') {
      throw new UsageError(`${outDir}: cannot write the output there, a part of the path is a file, not a folder (ENOTDIR)`, 'OUTPUT_NOT_WRITABLE', { cause: e });
    }
    if (code === 'ENAMETOOLONG') throw nameTooLong(outDir, e);
    throw e;
  }
  if (!st.isDirectory()) throw new UsageError(`output ${outDir} exists and is not a folder`, 'OUTPUT_EXISTS');
  await refuseMountPoint(outDir, st, fs);
  return (await readdir(outDir)).length === 0 ? 'empty' : 'present';
}

/**
 * Refuses an existing output folder that is a mount point: one the system lists as such, or,
 * where it lists none, one on another device than its parent. Where the folder really is
 * counts (an output given as a symbolic link to a folder elsewhere is not a mount point), and a
 * listed mount table spares folders with their own device that are no mount points (btrfs
 * subvolumes), which renames handle.
 */
async function refuseMountPoint(outDir: string, st: { dev: number }, fs: OutputStatFs): Promise<void> {
  const out = fs.realpath ? await fs.realpath(resolve(outDir)) : resolve(outDir);
  const parent = dirname(out);
  const listed = fs.mountPoints ? await fs.mountPoints() : undefined;
  const mountPoint = parent === out || (listed !== undefined ? listed.has(out) : (await fs.stat(parent)).dev !== st.dev);
  if (mountPoint) {
    throw new UsageError(
      `${outDir} is a mount point (another filesystem than ${parent}); apex writes an output folder beside it and renames it into place, which a mount point cannot take: give a subfolder of it instead, e.g. ${join(out, 'out')}`,
      'OUTPUT_NOT_WRITABLE',
    );
  }
}

export interface AtomicOutputOptions {
  /** Replace an existing non-empty output folder. */
  force?: boolean;
  /** Recorded in the lock file (e.g. `apex expand`). */
  command?: string;
  /** Hears about stale locks taken over and abandoned folders cleaned up. */
  onWarning?: (message: string) => void;
}

/**
 * Runs `build` against a fresh temporary folder, then `verify`, then renames the folder to
 * `outDir`. Returns what `build` returned.
 */
export async function writeAtomicFolder<T>(
  outDir: string,
  options: AtomicOutputOptions,
  build: (tmpDir: string) => Promise<T>,
  verify?: (tmpDir: string, built: T) => Promise<void>,
): Promise<T> {
  // An output given as a symbolic link to a folder is written where the link points: renaming
  // into the link's own place replaced the link with a folder, and the target stayed empty.
  const out = await followLink(resolve(outDir));
  const parent = dirname(out);
  await makeOutputFolder(parent);
  const lock = await acquireOutputLock(out, { command: options.command, onWarning: options.onWarning });
  try {
    await assertWritableTarget(out, options.force ?? false);
    const tmp = `${out}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    await mkdir(tmp).catch((e: unknown) => { throw ioError(tmp, 'create the temporary output folder', e); });
    try {
      const built = await build(tmp);
      await fsyncDir(tmp);
      if (verify) await verify(tmp, built);
      await moveIntoPlace(tmp, out, options.force ?? false);
      return built;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
  } finally {
    await lock.release();
  }
}

/** The folder a symbolic link points to (to its final target), else the path itself. */
async function followLink(path: string): Promise<string> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined || !st.isSymbolicLink()) return path;
  return realpath(path).catch(() => path); // a dangling link: the write reports what is wrong
}

async function assertWritableTarget(out: string, force: boolean): Promise<void> {
  const state = await outputState(out);
  if (state === 'present' && !force) {
    throw new UsageError(`output ${out} already exists and is not empty; choose another folder or pass --force to replace it`, 'OUTPUT_EXISTS');
  }
}

async function moveIntoPlace(tmp: string, out: string, force: boolean): Promise<void> {
  const state = await outputState(out);
  if (state === 'present' && !force) {
    throw new UsageError(`output ${out} appeared while apex was writing; left it alone (the new result was discarded)`, 'OUTPUT_EXISTS');
  }
  let old: string | undefined;
  if (state !== 'absent') {
    old = `${out}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
    await rename(out, old).catch((e: unknown) => { throw ioError(out, 'move the previous output aside', e); });
  }
  try {
    await rename(tmp, out);
  } catch (e) {
    if (old) await rename(old, out).catch(() => {});
    throw ioError(out, 'rename the finished output into place', e);
  }
  await fsyncDir(dirname(out));
  if (old) await rm(old, { recursive: true, force: true });
}

/** The nearest folder at or above `path` that exists (the one a `mkdir -p` of `path` writes into). */
export async function nearestExistingFolder(path: string): Promise<string> {
  let existing = resolve(path);
  while (existing !== dirname(existing) && !(await stat(existing).then((s) => s.isDirectory(), () => false))) existing = dirname(existing);
  return existing;
}

/**
 * Refuses (exit 2, OUTPUT_NOT_WRITABLE) an output path one of whose folders is a file, as
 * makeOutputFolder does when it comes to create it: for the dry runs, which create nothing and
 * otherwise met the file as a raw ENOTDIR from stat or readdir (exit 3, as an input problem).
 */
export async function refuseFileInOutputPath(path: string): Promise<void> {
  let folder = dirname(resolve(path));
  for (;;) {
    const st = await stat(folder).catch(() => undefined);
    if (st !== undefined) {
      if (!st.isDirectory()) throw new UsageError(`${path}: cannot create the output folder, a part of the path is a file, not a folder (${folder})`, 'OUTPUT_NOT_WRITABLE');
      return;
    }
    if (folder === dirname(folder)) return;
    folder = dirname(folder);
  }
}

/**
 * Refuses, before any work and before the free-space check, an output folder that apex could
 * not write: its temporary sibling goes into the parent folder (or the nearest one above it
 * that exists), so that folder must be writable. access(W_OK) says EROFS on a read-only mount
 * (root included) and EACCES/EPERM without permission. Without this, a read-only filesystem
 * with little free space read as "disk full" (exit 5) instead of "not writable" (exit 2).
 */
export async function checkOutputWritable(outDir: string): Promise<void> {
  const folder = await nearestExistingFolder(dirname(resolve(outDir)));
  try {
    await access(folder, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      throw new UsageError(`${outDir}: cannot write the output, ${folder} is not writable${code === 'EROFS' ? ' (a read-only filesystem)' : ''} (${code})`, 'OUTPUT_NOT_WRITABLE', { cause: e });
    }
    // Anything else: the write itself will say it.
  }
}

/** fsyncs one file (after copyFile or other writes that did not sync). */
export async function fsyncFile(path: string): Promise<void> {
  const h = await open(path, 'r+').catch((e: unknown) => { throw ioError(path, 'fsync', e); });
  try {
    await h.sync();
  } catch (e) {
    throw ioError(path, 'fsync', e);
  } finally {
    await h.close();
  }
}

/**
 * `mkdir -p` for an output folder, with its failures said as output problems: a recursive
 * mkdir under a read-only mount reports ENOENT (Node), which would otherwise read as "input not
 * found" (exit 3); the deepest folder that exists is checked and named instead.
 */
const PSEUDO_FILE_SYSTEMS = ['/proc', '/sys'];

export async function makeOutputFolder(path: string): Promise<void> {
  // Node's recursive mkdir spins forever on some paths of these pseudo file systems
  // (`/proc/<name>/x`); nothing apex writes belongs there.
  const absolute = resolve(path);
  const pseudo = PSEUDO_FILE_SYSTEMS.find((root) => absolute === root || absolute.startsWith(`${root}/`));
  if (pseudo !== undefined && process.platform === 'linux') {
    throw new UsageError(`${path}: cannot create the output folder under ${pseudo}, a kernel pseudo file system`, 'OUTPUT_NOT_WRITABLE');
  }
  try {
    await mkdir(path, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
      const existing = await nearestExistingFolder(dirname(resolve(path)));
      const writable = await access(existing, constants.W_OK).then(() => true, () => false);
      if (!writable || code !== 'ENOENT') {
        throw new UsageError(`${path}: cannot create the output folder, ${existing} is not writable (${code})`, 'OUTPUT_NOT_WRITABLE', { cause: e });
      }
    }
    if (code === 'ENOTDIR' || code === 'EEXIST') {
      throw new UsageError(`${path}: cannot create the output folder, a part of the path is a file, not a folder (${code})`, 'OUTPUT_NOT_WRITABLE', { cause: e });
    }
    throw ioError(path, 'create the output folder', e);
  }
}
