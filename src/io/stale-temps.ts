/**
 * Work in progress left by apex processes that were killed (SIGKILL, power loss) before they
 * could clean up. Every apex writer names its work in progress after the final path and its
 * own PID:
 *
 *   <name>.tmp-<pid>-<hex8>         a file or folder being written, renamed to <name> when done
 *   <name>.old-<pid>-<hex8>         a previous complete <name> moved aside for a moment while
 *                                   its replacement is renamed in
 *   <x>.lock.<pid>-<hex8>           a lock file being created (output-lock.ts)
 *   <x>.lock.stale-<pid>-<hex8>     a stale lock being taken over
 *
 * <hex8> is 4 random bytes in lower-case hex. The exact form is required so that a user's
 * own names next to an output (`model.old-2023`, `model.tmp-7`) are never taken for apex's.
 *
 * Whoever takes an output's lock sweeps what dead processes left next to the output and, in a
 * folder apex recognises as its own (a run folder), inside it. A name whose PID is alive on
 * this machine is never touched: it is some live process's work.
 */
import type { Dirent } from 'node:fs';
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** True when `pid` names a live process on this machine. */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const IN_PROGRESS = /^(.+)\.(tmp|old)-(\d+)-[0-9a-f]{8}$/;
const LOCK_IN_PROGRESS = /^(.+\.lock)\.(?:stale-)?(\d+)-[0-9a-f]{8}$/;

/** What a work-in-progress name stands for, or undefined for an ordinary name. */
export interface InProgressName {
  readonly kind: 'tmp' | 'old' | 'lock';
  /** The final name it is (or was) the work in progress of. */
  readonly target: string;
  /** The PID of the process that wrote it. */
  readonly pid: number;
}

export function inProgressName(name: string): InProgressName | undefined {
  const m = IN_PROGRESS.exec(name);
  if (m) return { kind: m[2] as 'tmp' | 'old', target: m[1]!, pid: Number(m[3]) };
  const l = LOCK_IN_PROGRESS.exec(name);
  if (l) return { kind: 'lock', target: l[1]!, pid: Number(l[2]) };
  return undefined;
}

/** Top-level names that mark a folder as an apex run folder, whose insides are swept too. */
const RUN_FOLDER_MARKERS = ['run.json', 'stages'];

/**
 * Removes the work in progress of dead processes for the output `outDir`: its siblings named
 * after it (`<out>.tmp-…`, `<out>.old-…`, its lock's temporaries) and, when `<out>` is a run
 * folder, every such name inside it. An abandoned `.old-` folder is put back when its final
 * name is missing (the killed process had moved it aside and not yet renamed its replacement
 * in), removed otherwise. Call with the output's lock held. Returns the paths cleaned up,
 * relative to the output's parent folder; never throws (what cannot be removed stays).
 */
export async function removeStaleTemporaries(outDir: string): Promise<string[]> {
  const out = resolve(outDir);
  const parent = dirname(out);
  const base = basename(out);
  const removed: string[] = [];
  const siblings = await list(parent);
  for (const name of siblings) {
    const p = inProgressName(name);
    if (!p || (p.target !== base && p.target !== `${base}.lock`)) continue;
    await sweep(parent, name, p, removed, parent);
  }
  const inside = await list(out);
  if (inside.some((n) => RUN_FOLDER_MARKERS.includes(n))) await sweepTree(out, removed, parent);
  return removed;
}

async function sweepTree(dir: string, removed: string[], root: string): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = inProgressName(e.name);
    if (p) await sweep(dir, e.name, p, removed, root);
    else if (e.isDirectory()) await sweepTree(join(dir, e.name), removed, root);
  }
}

async function sweep(dir: string, name: string, p: InProgressName, removed: string[], root: string): Promise<void> {
  if (processAlive(p.pid)) return;
  const path = join(dir, name);
  const shown = path.slice(root.length + 1);
  try {
    if (p.kind === 'old' && !(await exists(join(dir, p.target)))) {
      await rename(path, join(dir, p.target));
      return;
    }
    await rm(path, { recursive: true, force: true });
    removed.push(shown);
  } catch {
    // Left for the next sweep (e.g. no permission): never a reason to fail the command.
  }
}

async function list(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => [] as string[]);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/**
 * Removes the temporaries of a single-file output (`.<name>.tmp-<pid>-<hex8>` next to `path`,
 * safetensors-writer.ts) that dead processes left. Single-file outputs take no lock: a live
 * writer's temporary is never touched, and each writer renames only its own. Never throws.
 */
export async function removeStaleFileTemporaries(path: string): Promise<string[]> {
  const dir = dirname(resolve(path));
  const hidden = `.${basename(path)}`;
  const removed: string[] = [];
  for (const name of await list(dir)) {
    const p = inProgressName(name);
    if (p?.kind === 'tmp' && p.target === hidden) await sweep(dir, name, p, removed, dir);
  }
  return removed;
}
