/**
 * An exclusive lock on an output folder, so two apex processes writing the same output cannot
 * both succeed. The lock is a file `<out>.lock` next to the folder (the folder itself only
 * appears at the final rename), created with O_EXCL and holding the owner's PID, host name
 * and start time. A lock left by a process that is gone (same host, PID not alive) is taken
 * over with a warning; a live one is refused with a message naming its PID. Whoever takes the
 * lock first sweeps the work in progress that killed processes left for this output
 * (stale-temps.ts).
 */
import { hostname } from 'node:os';
import { readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { link, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';
import { ioError, lockNameTooLong } from './io-error.js';
import { processAlive, removeStaleTemporaries } from './stale-temps.js';

export interface LockOwner {
  readonly pid: number;
  readonly hostname: string;
  readonly startedAt: string;
  readonly command?: string;
}

export interface OutputLock {
  readonly path: string;
  readonly owner: LockOwner;
  release(): Promise<void>;
}

export function lockPathFor(outDir: string): string {
  return `${outDir.replace(/[/\\]+$/, '')}.lock`;
}

/**
 * Refuses (exit 2, OUTPUT_NOT_WRITABLE) an output whose lock file's name would be too long for
 * the filesystem, as acquireOutputLock would: for dry runs, which take no lock. Writes nothing:
 * the lookup of that name fails with ENAMETOOLONG where the filesystem cannot hold it.
 */
export async function refuseLockNameTooLong(outDir: string): Promise<void> {
  const probe = `${lockPathFor(namedOutputPath(outDir))}.${process.pid}-00000000`;
  try {
    await stat(probe);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // With the folder not there yet (the command makes it), the lookup stops before the name: 255 bytes, as on Linux's filesystems.
    const parentMissing = code === 'ENOENT' && (await stat(dirname(probe)).then(() => false, () => true));
    if (code === 'ENAMETOOLONG' || (parentMissing && Buffer.byteLength(basename(probe)) > 255)) throw lockNameTooLong(resolve(outDir), probe, e);
  }
}

/**
 * Takes the lock on `outDir` or throws UsageError OUTPUT_LOCKED, then removes what dead
 * processes left in progress for it. `onWarning` hears about a stale lock taken over and
 * each abandoned temporary cleaned up.
 */
export async function acquireOutputLock(outDir: string, options: { command?: string; onWarning?: (message: string) => void } = {}): Promise<OutputLock> {
  // Beside the output as named: the lock needs only the rights the output does, also when the
  // output is a link to a folder whose parent is not writable.
  const named = namedOutputPath(outDir);
  const owner: LockOwner = { pid: process.pid, hostname: hostname(), startedAt: new Date().toISOString(), ...(options.command ? { command: options.command } : {}) };
  const text = `${JSON.stringify(owner)}\n`;
  const lock = await takeLockFile(outDir, lockPathFor(named), owner, text, options.onWarning);
  // A folder inside one that another live process is writing (`analyze -o run/analysis`
  // while `finetune -o run` trains) is that process's to write.
  const enclosing = await liveEnclosingLock(outDir, owner.hostname);
  if (enclosing !== undefined) {
    await lock.release();
    const relation = enclosing.folder === realOutputPath(outDir) ? 'is a link to' : 'lies inside';
    throw new UsageError(
      `output ${outDir} ${relation} ${enclosing.folder}, which apex process ${enclosing.owner.pid} is writing (started ${enclosing.owner.startedAt}; lock file ${lockPathFor(enclosing.folder)}). Wait for it to finish`,
      'OUTPUT_LOCKED',
    );
  }
  // An output named through a link also holds the lock of the folder it points to, so that a
  // process naming that folder itself sees this one. Where that lock cannot be created (the
  // folder's parent is not writable), the named lock alone stands.
  const target = realOutputPath(outDir);
  let targetLock: OutputLock | undefined;
  const targetOwner = target !== named ? await readOwner(lockPathFor(target)) : 'missing';
  // This process's own lock on the target (a run it is writing) already covers it.
  if (target !== named && !(typeof targetOwner === 'object' && targetOwner.pid === process.pid && targetOwner.hostname === owner.hostname)) {
    try {
      targetLock = await takeLockFile(outDir, lockPathFor(target), owner, text, options.onWarning);
    } catch (e) {
      // Only a live holder refuses; a lock that cannot be written there (OUTPUT_NOT_WRITABLE) leaves the named one alone.
      if (e instanceof UsageError && e.code === 'OUTPUT_LOCKED') {
        await lock.release();
        throw e;
      }
    }
  }
  for (const name of await removeStaleTemporaries(outDir)) options.onWarning?.(`cleaned up ${name} left by an interrupted apex process`);
  if (targetLock === undefined) return lock;
  const both = targetLock;
  return {
    path: lock.path,
    owner,
    async release() {
      await both.release();
      await lock.release();
    },
  };
}

/** Creates the lock file `path` for `outDir`, taking over a stale one; OUTPUT_LOCKED when a live process holds it. */
async function takeLockFile(outDir: string, path: string, owner: LockOwner, text: string, onWarning: ((message: string) => void) | undefined): Promise<OutputLock> {
  for (let attempt = 0; attempt < 5; attempt++) {
    if (await createExclusive(path, text)) return makeLock(path, owner, text);
    const current = await readOwner(path);
    if (current === 'missing') continue; // released between our two calls: try again
    if (current !== 'unreadable' && (current.hostname !== owner.hostname || ownerAlive(current))) {
      throw new UsageError(
        `output ${outDir} is locked by apex process ${current.pid} on ${current.hostname} (started ${current.startedAt}; lock file ${path}). ` +
          `Wait for it to finish, or delete the lock file if that process is gone.`,
        'OUTPUT_LOCKED',
      );
    }
    if (current === 'unreadable' && attempt === 0) {
      // A lock being written right now looks empty for a moment: give its owner time.
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    await takeOverStale(path, current);
    onWarning?.(
      current === 'unreadable'
        ? `removed an unreadable lock file ${path}`
        : `took over the stale lock ${path} left by process ${current.pid} (no longer running)`,
    );
  }
  throw new UsageError(`output ${outDir}: could not take the lock ${path} (another process keeps racing for it)`, 'OUTPUT_LOCKED');
}

/**
 * Removes the lock file at `path` when its owner is gone (this host, PID not running), for
 * locks of outputs nobody will take again (a pruned checkpoint's). True when it removed one.
 */
export async function removeStaleLock(path: string): Promise<boolean> {
  const owner = await readOwner(path);
  // An unreadable lock may be one being written right now: left alone.
  if (owner === 'missing' || owner === 'unreadable' || owner.hostname !== hostname() || ownerAlive(owner)) return false;
  await takeOverStale(path, owner);
  return true;
}

/** The output's path with its parent's symbolic links resolved (the last name kept as given). */
function namedOutputPath(outDir: string): string {
  const absolute = resolve(outDir);
  return join(realOutputPath(dirname(absolute)), basename(absolute));
}

/** The output's path with symbolic links resolved, as far as it exists. */
function realOutputPath(outDir: string): string {
  const absolute = resolve(outDir);
  try {
    return realpathSync(absolute);
  } catch {
    const parent = dirname(absolute);
    return parent === absolute ? absolute : join(realOutputPath(parent), basename(absolute));
  }
}

/** The nearest enclosing folder locked by another live process (this process's own locks do not count). */
async function liveEnclosingLock(outDir: string, host: string): Promise<{ folder: string; owner: LockOwner } | undefined> {
  // An output that is a link: the folder it points to may be locked under its own name.
  const target = realOutputPath(outDir);
  const folders = target !== namedOutputPath(outDir) ? [target] : [];
  for (let folder = dirname(target); folder !== dirname(folder); folder = dirname(folder)) folders.push(folder);
  for (const folder of folders) {
    const owner = await readOwner(lockPathFor(folder));
    if (owner === 'missing' || owner === 'unreadable' || owner.pid === process.pid) continue;
    if (owner.hostname !== host || ownerAlive(owner)) return { folder, owner };
  }
  return undefined;
}

/**
 * The lock's owner is still running: its PID is alive and did not start after the lock was
 * taken. A PID that a killed owner left and another process was given since (PIDs are reused)
 * would otherwise hold the output locked for good. The start time is known on Linux only;
 * elsewhere a live PID counts as the owner.
 */
function ownerAlive(owner: LockOwner): boolean {
  if (!processAlive(owner.pid)) return false;
  const started = processStartMs(owner.pid);
  const locked = Date.parse(owner.startedAt);
  // 2 s of slack: the two clocks are read with different resolutions.
  return started === undefined || !Number.isFinite(locked) || started <= locked + 2000;
}

/** When process `pid` started (ms since the epoch), from /proc; undefined where that is unknown. */
export function processStartMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime, clock ticks after boot) counts from after the ")" that ends the command name.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    const boot = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    if (!Number.isFinite(ticks) || boot === null) return undefined;
    return Number(boot[1]) * 1000 + (ticks / CLOCK_TICKS_PER_SECOND) * 1000;
  } catch {
    return undefined;
  }
}

/** USER_HZ, 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

async function createExclusive(path: string, text: string): Promise<boolean> {
  // Write the full content to a private file first, then link it into place: the lock never
  // exists half-written, and link() fails with EEXIST when someone holds it.
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}`;
  const h = await open(tmp, 'wx').catch((e: unknown) => {
    throw (e as NodeJS.ErrnoException)?.code === 'ENAMETOOLONG' ? lockNameTooLong(path.replace(/\.lock$/, ''), tmp, e) : ioError(tmp, 'create the lock file', e);
  });
  try {
    await h.writeFile(text);
    await h.sync();
  } catch (e) {
    // A full disk fails here, after the private file exists: leave nothing behind.
    await h.close().catch(() => {});
    await rm(tmp, { force: true });
    throw ioError(path, 'write the lock file', e);
  }
  await h.close();
  try {
    await link(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw ioError(path, 'create the lock file', e);
  } finally {
    await rm(tmp, { force: true });
  }
}

async function readOwner(path: string): Promise<LockOwner | 'missing' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'unreadable';
  }
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.pid === 'number' && typeof o.hostname === 'string' && typeof o.startedAt === 'string') return o as LockOwner;
  } catch {
    // fall through
  }
  return 'unreadable';
}

/**
 * Moves the stale lock aside (only one racer can rename it), then checks that what was moved
 * is the stale lock that was read; if a racer had already replaced it with a live lock, that
 * lock is put back.
 */
async function takeOverStale(path: string, stale: LockOwner | 'unreadable'): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw ioError(path, 'remove the stale lock', e);
  }
  const moved = await readOwner(aside);
  const same = stale === 'unreadable' ? moved === 'unreadable' : moved !== 'missing' && moved !== 'unreadable' && moved.pid === stale.pid && moved.startedAt === stale.startedAt;
  if (!same) await link(aside, path).catch(() => {});
  await rm(aside, { force: true });
}

function makeLock(path: string, owner: LockOwner, text: string): OutputLock {
  let released = false;
  return {
    path,
    owner,
    async release() {
      if (released) return;
      released = true;
      const current = await readFile(path, 'utf8').catch(() => undefined);
      if (current === text) await rm(path, { force: true });
    },
  };
}
