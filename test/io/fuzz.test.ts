/** Fast subset of scripts/fuzz-safetensors.ts: 300 seeded mutations of valid files and an index. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareShardedTarget, runFuzz, syntheticSeeds } from '../../scripts/lib/safetensors-fuzz.js';
import { tempDir } from './helpers.js';

const dir = await tempDir('apex-fuzz-');

describe('safetensors fuzzing (fast subset)', () => {
  it('300 mutated files and indexes: every failure is a typed exit-3 error, no slow case, no big allocation', async () => {
    const seeds = [
      ...syntheticSeeds(),
      { name: 'refs-stories260K', bytes: await readFile('fixtures/refs/stories260K/reference_outputs.safetensors') },
    ];
    const target = await prepareShardedTarget(dir);
    const summary = await runFuzz({ seed: 20261126, cases: 300, seeds, workDir: join(dir, 'work'), ...target, diskEvery: 5, indexEvery: 10, caseTimeBoundMs: 2000 });
    expect(summary.findings).toEqual([]);
    expect(summary.rejected).toBeGreaterThan(150);
    expect(summary.valid).toBeGreaterThan(0);
    expect(summary.indexCases).toBe(30);
    expect(Object.keys(summary.byRule).length).toBeGreaterThan(10);
  });
});
