/**
 * A single-file output (`analyze --dump-stats`, `generate --ids-out`), checked before any work
 * so that a mistyped path costs nothing and destroys nothing: it must not be a folder, must not
 * lie inside the model folder (a stray .safetensors file there would be read as part of the
 * model, and the path may name one of its weight files), no part of its folder's path may be a
 * file, and an existing file is replaced only with --force, as output folders are. Missing
 * parent folders are created when the file is written (`makeOutputFileFolder`), as `-o a/b/c`
 * creates an output folder's.
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { makeOutputFolder } from './atomic-output.js';
import { isInside } from './output-inputs.js';

export interface OutputFileCheck {
  /** The flag that names the file, for messages. */
  readonly flag: string;
  /** Folders the file must stay out of (the model's). */
  readonly protectedFolders?: readonly { readonly label: string; readonly path: string }[];
  /** Replace an existing file. */
  readonly force: boolean;
}

/** The absolute path of an acceptable output file, or UsageError. */
export function checkOutputFile(path: string, check: OutputFileCheck): string {
  const absolute = resolve(path);
  let kind: 'file' | 'folder' | 'other' | undefined;
  try {
    const s = statSync(absolute);
    kind = s.isFile() ? 'file' : s.isDirectory() ? 'folder' : 'other';
  } catch {
    kind = undefined;
  }
  if (kind === 'folder') throw new UsageError(`${check.flag} ${absolute} is a folder; give the path of a file to write`, 'OUTPUT_NOT_A_FILE');
  if (kind === 'other') throw new UsageError(`${check.flag} ${absolute} exists and is not a regular file`, 'OUTPUT_NOT_A_FILE');
  for (const folder of check.protectedFolders ?? []) {
    if (isInside(absolute, folder.path)) {
      throw new UsageError(`${check.flag} ${absolute} lies inside ${folder.label} (${resolve(folder.path)}); write it elsewhere`, 'OUTPUT_HOLDS_INPUT');
    }
  }
  if (kind === 'file' && !check.force) throw new UsageError(`${check.flag} ${absolute} exists; pass --force to replace it`, 'OUTPUT_EXISTS');
  if (kind === undefined) {
    // The deepest part of the folder's path that exists must be a folder (the rest is created).
    let existing = dirname(absolute);
    for (;;) {
      let folder: boolean | undefined;
      try {
        folder = statSync(existing).isDirectory();
      } catch {
        folder = undefined;
      }
      if (folder === false) throw new UsageError(`${check.flag} ${absolute}: cannot write there, ${existing} is a file, not a folder`, 'OUTPUT_NOT_WRITABLE');
      if (folder === true || existing === dirname(existing)) break;
      existing = dirname(existing);
    }
  }
  return absolute;
}

/** Creates the missing parent folders of a checked output file, just before it is written. */
export async function makeOutputFileFolder(path: string): Promise<void> {
  await makeOutputFolder(dirname(resolve(path)));
}
