/**
 * What a failed `apex finetune` or `apex run` does with a run folder that the same invocation
 * created: when nothing in it could be resumed from, the folder is removed, so a failure (bad
 * data, NaN loss, Ctrl-C before the first checkpoint) leaves nothing new behind. A folder that
 * existed before the command is never passed here.
 *
 * Nothing to resume from means the folder holds only: folders, training logs without a
 * checkpoint (`metrics.jsonl`: a resume without a checkpoint starts from step 0 and rewrites
 * it), temporaries of this process or of dead ones, and a run record
 * (`run.json`) whose completed work is at most the base model's fingerprint and the data
 * description. Anything else keeps the folder: a trainer checkpoint, a stage record or file, an
 * analysis, a fused model, an evaluation recorded in run.json, a live process's work.
 */
import type { Dirent } from 'node:fs';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { acquireOutputLock } from '../io/output-lock.js';
import { inProgressName, processAlive } from '../io/stale-temps.js';
import { RUN_STATE_FILE } from './run-state.js';

const TRAINING_LOG = 'metrics.jsonl';
/** run.json steps that record no work a rerun would save. */
const CHEAP_STEPS = new Set(['model', 'data']);

/** Removes `dir` when it holds nothing to resume from; call with its lock held. True when removed. */
export async function removeUnresumableRunFolder(dir: string): Promise<boolean> {
  if (!(await disposable(dir, true))) return false;
  await rm(dir, { recursive: true, force: true });
  return true;
}

/**
 * The same, taking the folder's lock first; a folder locked by another live process is left
 * alone (it is working there now).
 */
export async function removeUnresumableRunFolderLocked(dir: string, command: string): Promise<boolean> {
  if (!(await readdir(dir).then(() => true, () => false))) return false;
  const lock = await acquireOutputLock(dir, { command }).catch(() => undefined);
  if (lock === undefined) return false;
  try {
    return await removeUnresumableRunFolder(dir);
  } finally {
    await lock.release();
  }
}

async function disposable(dir: string, top: boolean): Promise<boolean> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const e of entries) {
    const p = inProgressName(e.name);
    if (p) {
      if (p.kind === 'old' || (p.pid !== process.pid && processAlive(p.pid))) return false;
      continue;
    }
    if (e.isDirectory()) {
      if (!(await disposable(join(dir, e.name), false))) return false;
      continue;
    }
    if (!e.isFile()) return false;
    if (e.name === TRAINING_LOG) continue;
    if (top && e.name === RUN_STATE_FILE && (await onlyCheapSteps(join(dir, e.name)))) continue;
    return false;
  }
  return true;
}

async function onlyCheapSteps(path: string): Promise<boolean> {
  try {
    const steps = (JSON.parse(await readFile(path, 'utf8')) as { steps?: unknown }).steps;
    return steps !== null && typeof steps === 'object' && Object.keys(steps).every((k) => CHEAP_STEPS.has(k));
  } catch {
    return false;
  }
}
