// Records say which build of apex made them (version+build, util/apex-build.ts): the same files
// give the same build, any changed module another one.
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { apexVersion } from '../../src/pipeline/analysis-provenance.js';
import { apexBuild } from '../../src/util/apex-build.js';

const tmp = mkdtempSync(join(tmpdir(), 'apex-build-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const buildOf = (dist: string) => execFileSync(process.execPath, ['--input-type=module', '-e', `import { apexBuild } from ${JSON.stringify(join(dist, 'util', 'apex-build.js'))}; console.log(apexBuild());`], { encoding: 'utf8' }).trim();

it('a copy of dist/ is the same build; one changed module makes another', () => {
  const a = join(tmp, 'a', 'dist');
  const b = join(tmp, 'b', 'dist');
  cpSync('dist', a, { recursive: true });
  cpSync('dist', b, { recursive: true });
  const original = buildOf(resolve('dist'));
  expect(original).toMatch(/^[0-9a-f]{12}$/);
  expect(buildOf(a)).toBe(original);
  // An editor's lock file (a dangling link named .#x.js) is no module: same build, no failure.
  symlinkSync('nowhere', join(a, 'util', '.#apex-build.js'));
  expect(buildOf(a)).toBe(original);
  appendFileSync(join(b, 'train', 'lr-schedule.js'), '\n// another build\n');
  expect(buildOf(b)).not.toBe(original);
});

it('the version records carry is the package version with the build', () => {
  const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  expect(apexVersion()).toBe(`${version}+${apexBuild()}`);
});
