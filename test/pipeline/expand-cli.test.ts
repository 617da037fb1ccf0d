// `apex expand` as users run it (node bin/run.js, needs `npm run build`): --json envelopes and
// exit codes, and crash safety — a process killed with SIGKILL at a random moment leaves either
// no output or a complete, verified one; SIGINT exits 130 and removes its temporary folder.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { Rng } from '../../src/util/rng.js';
import { tempDir } from '../io/helpers.js';
import { copyFixture, fixtureSpec, freshOperators, perturbOperators, writeOperators, writeRandomLlama } from './expand-fixtures.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  json?: { ok: boolean; data?: Record<string, unknown>; error?: { code: string; message: string; exit: number } };
  stderr: string;
}

function apex(args: string[], options: { killAfterMs?: number; signal?: NodeJS.Signals; when?: (stderr: string) => boolean } = {}): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['bin/run.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: '1' } });
    let stdout = '';
    let stderr = '';
    let sent = false;
    const send = () => {
      if (!sent) {
        sent = true;
        child.kill(options.signal ?? 'SIGKILL');
      }
    };
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (options.when?.(stderr)) send();
    });
    if (options.killAfterMs !== undefined) setTimeout(send, options.killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      let json: Run['json'];
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolvePromise({ code, signal, ...(json ? { json } : {}), stderr });
    });
  });
}

describe('apex expand CLI', () => {
  let dir: string;
  let input: string;
  let ops: string;

  beforeAll(async () => {
    if (!existsSync('dist/commands/expand.js')) throw new Error('build first: npm run build');
    dir = await tempDir('apex-expand-cli-');
    const spec = await fixtureSpec('stories260K');
    input = join(dir, 'in');
    await copyFixture('stories260K', input, 'BF16');
    ops = join(dir, 'ops.safetensors');
    await writeOperators(ops, perturbOperators(freshOperators(spec, 1, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 2), spec);
  });

  it('exit codes and --json envelopes', async () => {
    const out = join(dir, 'out');
    const nanOps = join(dir, 'nan-ops.safetensors');
    const spec = await fixtureSpec('stories260K');
    const [first, ...rest] = freshOperators(spec, 1, [{ heads: true, channels: true }]);
    await writeOperators(nanOps, [{ ...first!, mlp: { ...first!.mlp!, bUp: new Float32Array(first!.mlp!.bUp.length).fill(NaN) } }, ...rest], spec);
    const cases: [string[], number, string | undefined][] = [
      [['--run', dir, '--stage', '1', input, '--json'], 2, 'FLAG_CONFLICT'],
      [['--json'], 2, 'MISSING_ARGUMENT'],
      [['--run', dir, '--stage', 'two', '--json'], 2, undefined],
      [[input, '--operators', ops, '-o', out, '--max-memory', '4MB', '--json'], 5, 'MEMORY_LIMIT'],
      [[input, '--operators', nanOps, '-o', out, '--json'], 6, 'NON_FINITE'],
      [[input, '--operators', ops, '-o', out, '--dry-run', '--json'], 0, undefined],
    ];
    for (const [args, exit, code] of cases) {
      const r = await apex(['expand', ...args]);
      expect(r.code, args.join(' ')).toBe(exit);
      expect(r.json?.ok).toBe(exit === 0);
      if (code) expect(r.json?.error?.code).toBe(code);
    }
    expect((await readdir(dir)).filter((f) => f.startsWith('out'))).toEqual([]);

    const ok = await apex(['expand', input, '--operators', ops, '-o', out, '--json']);
    expect(ok.code).toBe(0);
    expect(ok.json?.data?.tensors).toEqual({ total: 47, changed: 25, copied: 22 });
    const record = JSON.parse(await readFile(join(out, 'apex_run.json'), 'utf8'));
    expect(record.argv).toEqual([input, '--operators', ops, '-o', out, '--json']);
    const again = await apex(['expand', input, '--operators', ops, '-o', out, '--json']);
    expect(again.code).toBe(2);
    expect(again.json?.error?.code).toBe('OUTPUT_EXISTS');
  });

  it('SIGKILL at random moments leaves nothing or a complete, verified checkpoint; SIGINT exits 130', async () => {
    const big = join(dir, 'big');
    const spec = await writeRandomLlama(big, { layers: 4, hidden: 512, heads: 8, kvHeads: 4, intermediate: 1536, vocab: 4096 }, 'BF16', 3, 12e6);
    const bigOps = join(dir, 'big-ops.safetensors');
    await writeOperators(bigOps, perturbOperators(freshOperators(spec, 4, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 5), spec);
    const args = ['expand', big, '--operators', bigOps, '-o', join(dir, 'killed'), '--force', '--json'];
    const t0 = Date.now();
    expect((await apex(args)).code).toBe(0);
    const fullMs = Date.now() - t0;
    const rng = new Rng(17);
    let killedMidway = 0;
    for (let i = 0; i < 3; i++) {
      const r = await apex(args, { killAfterMs: Math.floor(rng.next() * fullMs) });
      if (r.signal === 'SIGKILL') killedMidway++;
      const out = join(dir, 'killed');
      if (existsSync(out)) {
        const ck = await Checkpoint.open(out); // whatever is there must be complete
        expect(ck.tensorNames()).toHaveLength(3 + 9 * spec.numLayers);
        await ck.close();
        expect(existsSync(join(out, 'apex_run.json'))).toBe(true);
      }
    }
    expect(killedMidway).toBeGreaterThan(0);
    // the next run cleans up what the killed ones left (temporary folders, stale lock) and succeeds
    expect((await apex(args)).code).toBe(0);
    expect((await readdir(dir)).filter((f) => f.startsWith('killed.'))).toEqual([]);

    const out = join(dir, 'interrupted');
    const r = await apex(['expand', big, '--operators', bigOps, '-o', out, '--json'], { signal: 'SIGINT', when: (s) => s.includes('hashing the input') });
    expect(r.code).toBe(130);
    expect(r.json?.error?.code).toBe('INTERRUPTED');
    expect((await readdir(dir)).filter((f) => f.startsWith('interrupted'))).toEqual([]);
  });
});
