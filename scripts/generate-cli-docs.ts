/**
 * Writes the command reference (every command, argument and flag) into README.md between
 * the `<!-- commands:start -->` and `<!-- commands:end -->` markers, from the oclif command
 * classes themselves, so README cannot drift from the CLI. `--check` exits 1 when README is
 * out of date (used by test/cli/readme.test.ts).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { renderCommandReference } from '../src/cli/command-reference.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const readmePath = join(root, 'README.md');
const START = '<!-- commands:start -->';
const END = '<!-- commands:end -->';

const readme = await readFile(readmePath, 'utf8');
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < a) {
  process.stderr.write(`README.md has no ${START} … ${END} block\n`);
  process.exit(2);
}
const reference = await renderCommandReference(root);
const next = `${readme.slice(0, a + START.length)}\n${reference}\n${readme.slice(b)}`;
if (process.argv.includes('--check')) {
  if (next !== readme) {
    process.stderr.write('README.md command reference is out of date: run `npm run docs:cli`\n');
    process.exit(1);
  }
} else if (next !== readme) {
  await writeFile(readmePath, next);
}
