/**
 * The small public-domain English corpus that ships in fixtures/corpus/ for commands run without
 * `--data` (sources and licences in fixtures/corpus/SOURCES.md):
 * - `out-of-domain`: Herman Melville, Moby-Dick (one file per chapter), a domain the reference
 *   model llama-mha-f32 was not trained on, for continued-pre-training demonstrations;
 * - `in-domain`: six US State of the Union addresses, the reference model's training domain.
 * Paths are found from this module's location, so they resolve from src/ (vitest, tsx) and dist/.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../errors.js';

export const BUILTIN_CORPORA = ['out-of-domain', 'in-domain'] as const;
export type BuiltinCorpusName = (typeof BUILTIN_CORPORA)[number];

const CORPUS_FOLDERS: Record<BuiltinCorpusName, string> = {
  'out-of-domain': 'out-of-domain/moby-dick',
  'in-domain': 'in-domain/sotu',
};

/** The package root: this file lives in src/train/ or dist/train/. */
export function packageRoot(): string {
  return fileURLToPath(new URL('../../', import.meta.url));
}

export function isBuiltinCorpus(name: string): name is BuiltinCorpusName {
  return (BUILTIN_CORPORA as readonly string[]).includes(name);
}

/** The corpus's text files, absolute paths, in reading order. */
export function builtinCorpus(name: BuiltinCorpusName | string): string[] {
  if (!isBuiltinCorpus(name)) {
    throw new UsageError(`unknown built-in corpus '${name}'; choose one of: ${BUILTIN_CORPORA.join(', ')}`, 'UNKNOWN_CORPUS');
  }
  const dir = join(packageRoot(), 'fixtures', 'corpus', CORPUS_FOLDERS[name]);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * A data file's name that does not depend on where apex is installed: `builtin:<path inside
 * fixtures/corpus>` for a file of a bundled corpus (also one recorded by an apex installed
 * elsewhere, recognised by that tail when this installation has the same file), else the path.
 * Records hold absolute paths; a run compared by them would see a moved installation as new data.
 */
export function installIndependentName(file: string): string {
  const root = join(packageRoot(), 'fixtures', 'corpus') + sep;
  if (file.startsWith(root)) return `builtin:${file.slice(root.length).split(sep).join('/')}`;
  const m = /[\\/]fixtures[\\/]corpus[\\/](.+)$/.exec(file);
  if (m && existsSync(join(root, m[1]!))) return `builtin:${m[1]!.split(/[\\/]/).join('/')}`;
  return file;
}
