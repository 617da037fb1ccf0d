// Concurrency (issue 8): two apex processes writing the same output folder cannot both succeed.
// A live lock holder (a real process whose PID is in `<out>.lock`) makes expand, finetune and
// run exit 2 with OUTPUT_LOCKED naming that PID; a lock left by a dead PID is taken over with a
// warning; two real `apex expand -o same` started together end with exactly one success, the
// other refused with a clear message, and a complete output; a second `apex run -o same` while
// the first is working is refused naming the first one's PID.
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditOutput } from '../../scripts/lib/crash-audit.js';
import { fixtureSpec, freshOperators, perturbOperators, writeOperators } from '../pipeline/expand-fixtures.js';
import { apex, apexInProcess, ensureBuilt, LLAMA, startApex, workspace, type CliResult } from './cli.js';

const ws = workspace('concurrency');
const home = join(ws, 'hf-home');
const OPS = join(ws, 'ops.safetensors');
const CONFIG = join(ws, 'run.yaml');

function lockFile(out: string, pid: number): void {
  writeFileSync(`${out}.lock`, `${JSON.stringify({ pid, hostname: hostname(), startedAt: new Date().toISOString(), command: 'apex test holder' })}\n`);
}

/** A PID that is certainly not running: a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

describe('one writer per output folder', () => {
  const holder = spawn('sleep', ['600'], { stdio: 'ignore' });
  afterAll(() => { holder.kill('SIGKILL'); });

  beforeAll(async () => {
    await ensureBuilt(['expand', 'finetune', 'run']);
    const spec = await fixtureSpec('llama-mha-f32');
    await writeOperators(OPS, perturbOperators(freshOperators(spec, 1, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 2), spec);
    writeFileSync(CONFIG, `model: ${LLAMA}\nbackend: wasm\ndata: { train: [builtin:in-domain], seq_len: 16, eval_samples: 2, calibration_samples: 4 }\nstages: { count: 1, steps: 1 }\noptimizer: { batch_size: 2 }\nbaseline: { vanilla: false }\n`);
  }, 180_000);

  it('a live lock holder: expand, finetune and run exit 2 naming its PID; a dead holder\'s lock is taken over', async () => {
    const dead = deadPid();
    const outs = ['live-expand', 'live-finetune', 'live-run', 'stale-expand', 'stale-run'].map((n) => join(ws, n));
    outs.slice(0, 3).forEach((o) => lockFile(o, holder.pid!));
    outs.slice(3).forEach((o) => lockFile(o, dead));
    const [liveExpand, liveFinetune, liveRun, staleExpand, staleRun] = await apexInProcess(
      [
        ['expand', LLAMA, '--operators', OPS, '-o', outs[0]!],
        ['finetune', LLAMA, '-o', outs[1]!, '--corpus', 'in-domain', '--seq-len', '16', '--samples', '4', '--batch-size', '2', '--steps', '1', '--backend', 'wasm', '--setting', 'operators'],
        ['run', CONFIG, '-o', outs[2]!],
        ['expand', LLAMA, '--operators', OPS, '-o', outs[3]!],
        ['run', CONFIG, '-o', outs[4]!],
      ].map((args) => ({ args: [...args, '--json'], cwd: ws, home })),
      ws,
    );
    for (const [label, r] of [['expand', liveExpand], ['finetune', liveFinetune], ['run', liveRun]] as [string, CliResult][]) {
      expect(r.status, `${label}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.json?.error?.code, label).toBe('OUTPUT_LOCKED');
      expect(r.json?.error?.message, label).toContain(`process ${holder.pid}`);
    }
    for (const [label, r, out] of [['expand', staleExpand, outs[3]], ['run', staleRun, outs[4]]] as [string, CliResult, string][]) {
      expect(r.status, `${label}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.json?.warnings?.join('\n'), label).toMatch(new RegExp(`stale lock .*process ${dead}`));
      expect((await auditOutput(out)).problems, label).toEqual([]);
    }
  }, 300_000);

  /** Starts two identical commands together; resolves with both outcomes. */
  async function race(args: string[]): Promise<CliResult[]> {
    const one = (): Promise<CliResult> => new Promise((done) => {
      const child = startApex([...args, '--json'], { home, cwd: ws });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.on('close', (status, signal) => done({ status, signal, stdout, stderr, ...(stdout.trim() ? { json: JSON.parse(stdout) as CliResult['json'] } : {}) }));
    });
    return Promise.all([one(), one()]);
  }

  it('two apex expand -o same started together: exactly one succeeds, the other is refused clearly', async () => {
    const results = await race(['expand', LLAMA, '--operators', OPS, '-o', join(ws, 'raced')]);
    const ok = results.filter((r) => r.status === 0);
    const refused = results.filter((r) => r.status !== 0);
    expect(ok.length, results.map((r) => r.stdout + r.stderr).join('\n---\n')).toBe(1);
    expect(refused[0]!.status).toBe(2);
    // Refused while the other held the lock (names its PID), or after it finished (output exists).
    expect(refused[0]!.json?.error?.code).toMatch(/^(OUTPUT_LOCKED|OUTPUT_EXISTS)$/);
    if (refused[0]!.json?.error?.code === 'OUTPUT_LOCKED') expect(refused[0]!.json.error.message).toMatch(/locked by apex process \d+/);
    const audit = await auditOutput(join(ws, 'raced'));
    expect(audit.problems).toEqual([]);
    expect(audit.leftovers).toEqual([]);
  }, 300_000);

  // The first run's 20 steps keep it holding the lock well past the second one's start-up.
  it('a second apex run -o same while the first is working is refused naming its PID; the first still succeeds', async () => {
    const out = join(ws, 'overlapping-run');
    const first = startApex(['run', CONFIG, '-o', out, 'stages.steps=20', '--json'], { home, cwd: ws });
    let stderr = '';
    const started = new Promise<void>((ready) => first.stderr.on('data', (d: Buffer) => { stderr += d.toString(); if (/starting run/.test(stderr)) ready(); }));
    const firstDone = new Promise<number | null>((done) => first.on('close', (code) => done(code)));
    await started;
    const second = await apex(['run', CONFIG, '-o', out, 'stages.steps=20', '--json'], { home, cwd: ws });
    expect(second.status, second.stdout).toBe(2);
    expect(second.json?.error?.code).toBe('OUTPUT_LOCKED');
    expect(second.json?.error?.message).toContain(`process ${first.pid}`);
    expect(await firstDone, stderr).toBe(0);
  }, 300_000);
});
