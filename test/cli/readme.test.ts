import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** README.md must document every command and flag the CLI has (generated reference is current). */
describe('README command reference', () => {
  it('matches the compiled commands', () => {
    let status = 0;
    let stderr = '';
    try {
      execFileSync(process.execPath, ['--import', 'tsx', 'scripts/generate-cli-docs.ts', '--check'], { stdio: 'pipe' });
    } catch (e) {
      status = (e as { status: number }).status;
      stderr = String((e as { stderr: Buffer }).stderr);
    }
    expect(stderr).toBe('');
    expect(status).toBe(0);
  });

  it('states the two commands and .ci/run runs the test command', () => {
    const readme = readFileSync('README.md', 'utf8');
    expect(readme).toContain('npm ci && node bin/run.js run');
    expect(readme).toContain('npm ci && npm test');
    expect(readFileSync('.ci/run', 'utf8')).toMatch(/^npm ci && npm test$/m);
  });

  it('names only files of the repository in its examples', () => {
    const readme = readFileSync('README.md', 'utf8');
    const named = [...readme.matchAll(/\b((?:examples|fixtures|scripts|bench)\/[\w./-]+\.(?:yaml|ts|sh|jsonl|txt))\b/g)].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(0);
    for (const file of new Set(named)) expect(existsSync(file), file).toBe(true);
  });
});
