/** Shared helpers of the config tests: config files in a temporary folder, problems as lines. */
import { expect } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigValidationError, resolveConfig, type ResolveConfigOptions } from '../../src/run/config.js';
import { formatProblem } from '../../src/run/schema-check.js';

/** A fresh folder with `files` (relative name → text) written into it. */
export function tempFolder(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'apex-config-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/** A minimal valid config body, to which tests append what they exercise. */
export const MINIMAL = 'model: ./model\ndata:\n  train: train.txt\n';

/** The problem lines of a config that must fail validation (fails the test if it resolves). */
export async function problemLines(options: ResolveConfigOptions): Promise<string[]> {
  try {
    await resolveConfig(options);
  } catch (err) {
    if (err instanceof ConfigValidationError) {
      expect(err.exit).toBe(2);
      expect(err.code).toBe('CONFIG_INVALID');
      // the message a user sees carries every problem line
      for (const p of err.problems) expect(err.message).toContain(formatProblem(p));
      return err.problems.map(formatProblem);
    }
    throw err;
  }
  throw new Error('config resolved, but problems were expected');
}

/** Problem lines of a config file with body `text` (written as run.yaml) and overrides. */
export async function fileProblems(text: string, overrides: string[] = []): Promise<string[]> {
  const dir = tempFolder({ 'run.yaml': text });
  return problemLines({ file: 'run.yaml', overrides, cwd: dir });
}
