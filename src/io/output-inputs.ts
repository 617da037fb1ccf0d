/**
 * An output folder that `--force` replaces must not hold the command's own inputs: replacing
 * it would delete the model or data the command is about to read (and the user's copy of
 * them). Checked before anything is removed.
 */
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { UsageError } from '../errors.js';

export interface NamedInput {
  /** What the input is, e.g. "the model" or "data.train". */
  readonly label: string;
  readonly path: string;
}

/** The real path when it exists (symlinks resolved), else the absolute path. */
function real(path: string): string {
  try {
    return realpathSync(resolve(path));
  } catch {
    return resolve(path);
  }
}

/** True when `inner` is `outer` or lies inside it. */
export function isInside(inner: string, outer: string): boolean {
  const rel = relative(real(outer), real(inner));
  return rel === '' || (rel.split(sep)[0] !== '..' && !isAbsolute(rel));
}

/**
 * Throws when replacing `output` would delete one of `inputs`, the current working folder or the
 * home folder: an output folder is moved aside and replaced as a whole, so `-o .` (or `-o ''`,
 * or a parent of the working folder) with `--force` deleted everything in it, inputs or not, and
 * left the shell in a deleted folder.
 */
export function refuseInputsInsideOutput(output: string, inputs: readonly NamedInput[], flag = '--force'): void {
  const protectedFolders = [{ label: 'the current working folder', path: process.cwd() }, { label: 'your home folder', path: homedir() }];
  const inside = [...inputs, ...protectedFolders].filter((i) => isInside(i.path, output));
  if (inside.length === 0) return;
  throw new UsageError(
    `${flag} would replace ${resolve(output)}, which holds ${inside.map((i) => `${i.label} (${i.path})`).join(' and ')}; ` +
      'write the output to another folder (a new one), or move the inputs out of it first',
    'OUTPUT_HOLDS_INPUT',
  );
}
