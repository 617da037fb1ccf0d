// Memory limit (issue 8): `--max-memory` (run: `max_memory=`) below a command's estimate makes
// analyze, eval, expand, finetune and run refuse to start, exit 5 with the estimate and the
// limit in the message, and write nothing. Units are the documented ones: `153MB` is 153·10⁶
// bytes and `153MiB` 153·2²⁰, so a limit between the two accepts one spelling and refuses the
// other. The estimates' accuracy is measured by scripts/memory-estimates.ts (docs/reliability.md).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { fixtureSpec, freshOperators, perturbOperators, writeOperators } from '../pipeline/expand-fixtures.js';
import { apexInProcess, ensureBuilt, listTree, LLAMA, workspace, type CliResult } from './cli.js';

const ws = workspace('memory-limit');
const home = join(ws, 'hf-home');
const OPS = join(ws, 'ops.safetensors');
const CONFIG = join(ws, 'run.yaml');
const SMALL = ['--samples', '2', '--seq-len', '16', '--backend', 'wasm'];

const REFUSED: Record<string, string[]> = {
  analyze: ['analyze', LLAMA, '-o', 'out', ...SMALL, '--max-memory', '1MB'],
  eval: ['eval', LLAMA, ...SMALL, '--max-memory', '1MB'],
  expand: ['expand', LLAMA, '--operators', OPS, '-o', 'out', '--max-memory', '1MB'],
  finetune: ['finetune', LLAMA, '-o', 'out', '--corpus', 'in-domain', '--seq-len', '16', '--samples', '4', '--batch-size', '2', '--steps', '1', '--max-memory', '1MB'],
  run: ['run', CONFIG, '-o', 'out', 'max_memory=1MB'],
};

describe('--max-memory', () => {
  const results = new Map<string, { result: CliResult; before: string[]; after: string[] }>();

  beforeAll(async () => {
    await ensureBuilt(['analyze', 'eval', 'expand', 'finetune', 'run']);
    const spec = await fixtureSpec('llama-mha-f32');
    await writeOperators(OPS, perturbOperators(freshOperators(spec, 1, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 2), spec);
    writeFileSync(CONFIG, `model: ${LLAMA}\nbackend: wasm\ndata: { train: [builtin:in-domain], seq_len: 16, eval_samples: 2, calibration_samples: 2 }\nstages: { count: 1, steps: 1 }\noptimizer: { batch_size: 2 }\nbaseline: { vanilla: false }\n`);
    const names = Object.keys(REFUSED);
    const dirs = names.map((n) => join(ws, n));
    dirs.forEach((d) => mkdirSync(d));
    const before = dirs.map((d) => listTree(d));
    const out = await apexInProcess(names.map((n, i) => ({ args: [...REFUSED[n]!, '--json'], cwd: dirs[i]!, home })), ws);
    names.forEach((n, i) => results.set(n, { result: out[i]!, before: before[i]!, after: listTree(dirs[i]!) }));
  }, 300_000);

  for (const name of Object.keys(REFUSED)) {
    it(`${name}: a limit below the estimate is refused with exit 5, naming the estimate and the limit`, () => {
      const { result } = results.get(name)!;
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(5);
      expect(result.json?.error?.code).toMatch(/^MEMORY_/);
      expect(result.json?.error?.message).toMatch(/needs about [\d.]+ [kMG]B/);
      expect(result.json?.error?.message).toMatch(/1\.00 MB/);
    });
  }

  for (const name of ['analyze', 'eval', 'expand', 'finetune']) {
    it(`${name}: nothing written`, () => {
      const r = results.get(name)!;
      expect(r.after).toEqual(r.before);
    });
  }

  // Known gap (reported): `apex run` creates the run folder and run.json before the first step
  // whose memory it checks. This assertion states the requirement and fails until that is fixed.
  it('run: nothing written', () => {
    const r = results.get('run')!;
    expect(r.after).toEqual(r.before);
  });

  it('8GiB and 8GB are accepted; a limit between N MB and N MiB tells the units apart', async () => {
    const dry = (limit: string) => ['expand', LLAMA, '--operators', OPS, '-o', join(ws, 'never'), '--dry-run', '--json', '--max-memory', limit];
    const [gib, gb] = await apexInProcess([{ args: dry('8GiB'), cwd: ws, home }, { args: dry('8GB'), cwd: ws, home }], ws);
    expect(gib!.status, gib!.stderr).toBe(0);
    expect(gb!.status, gb!.stderr).toBe(0);
    const estimate = (gib!.json!.data!.memory as { totalBytes: number; limitBytes: number }).totalBytes;
    expect((gib!.json!.data!.memory as { limitBytes: number }).limitBytes).toBe(8 * 2 ** 30);
    expect((gb!.json!.data!.memory as { limitBytes: number }).limitBytes).toBe(8e9);
    const n = Math.ceil(estimate / 2 ** 20);
    expect(n * 1e6).toBeLessThan(estimate); // holds for any estimate above ~22 MB
    const [mb, mib] = await apexInProcess([{ args: dry(`${n}MB`), cwd: ws, home }, { args: dry(`${n}MiB`), cwd: ws, home }], ws);
    expect(mb!.status).toBe(5);
    expect(mib!.status, mib!.stderr).toBe(0);
    expect(listTree(ws).some((p) => p.startsWith('never'))).toBe(false);
  }, 120_000);
});
