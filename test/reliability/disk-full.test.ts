// Disk full (issue 8): every command that writes, pointed at a real, size-limited tmpfs that is
// already full, exits 5 (DISK_FULL) with a message naming the path it could not write, and
// leaves no file behind (not even a lock). A stage that runs out of space in the middle of
// training leaves only complete artefacts and resumes once space is freed. Needs root to mount
// a 64 MiB tmpfs; skipped (with the reason) otherwise.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditOutput } from '../../scripts/lib/crash-audit.js';
import { apex, apexInProcess, ensureBuilt, listTree, LLAMA, workspace } from './cli.js';

function mountTmpfs(dir: string, size: string): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `mount -t tmpfs failed: ${(e as Error).message.split('\n')[0]}`;
  }
}

/** Fills the filesystem of `dir` until ENOSPC (tmpfs: exactly, no reserved blocks). */
function fill(dir: string, leaveBytes = 0): void {
  const df = execFileSync('df', ['-B1', '--output=avail', dir], { encoding: 'utf8' }).trim().split('\n').pop()!;
  writeFileSync(join(dir, 'filler'), Buffer.alloc(Math.max(0, Number(df) - leaveBytes)));
}

const ws = workspace('disk-full');
const mnt = join(ws, 'mnt');
mkdirSync(mnt);
const skipReason = mountTmpfs(mnt, '64m');
afterAll(() => { if (skipReason === undefined) execFileSync('umount', [mnt]); });

const TRAIN = ['--corpus', 'in-domain', '--seq-len', '32', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--backend', 'wasm'];

describe.skipIf(skipReason !== undefined)(`a full filesystem${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  beforeAll(() => ensureBuilt(['expand', 'analyze', 'finetune', 'run', 'generate']), 180_000);

  it('expand, analyze, finetune, run and generate --ids-out: exit 5 naming the path, nothing left behind', async () => {
    rmSync(join(mnt, 'filler'), { force: true });
    // Expand's inputs: a stage trained elsewhere (operators + trained tensors).
    const source = join(ws, 'source');
    const prep = await apex(['finetune', LLAMA, '-o', source, ...TRAIN, '--steps', '1', '--no-expand'], { home: join(ws, 'home') });
    expect(prep.status, prep.stderr).toBe(0);
    const config = join(ws, 'run.yaml');
    writeFileSync(config, `model: ${LLAMA}\nbackend: wasm\ndata: { train: [builtin:in-domain], seq_len: 32, eval_samples: 2, calibration_samples: 4 }\nstages: { count: 1, steps: 1 }\noptimizer: { batch_size: 2 }\n`);
    fill(mnt);
    const cases = [
      ['expand', LLAMA, '--operators', join(source, 'stages', '1', 'operators.safetensors'), '--updates', join(source, 'stages', '1', 'trained.safetensors'), '-o', join(mnt, 'expanded')],
      ['analyze', LLAMA, '-o', join(mnt, 'analysis'), '--samples', '4', '--seq-len', '32', '--backend', 'wasm'],
      ['finetune', LLAMA, '-o', join(mnt, 'finetune'), ...TRAIN, '--steps', '2'],
      ['run', config, '-o', join(mnt, 'run')],
      ['generate', LLAMA, '--max-new-tokens', '2', '--backend', 'wasm', '--ids-out', join(mnt, 'ids.safetensors')],
    ];
    const results = await apexInProcess(cases.map((args) => ({ args: [...args, '--json'], cwd: ws, home: join(ws, 'home') })), ws);
    results.forEach((r, i) => {
      const label = `apex ${cases[i]![0]}`;
      expect(r.status, `${label}: ${r.stdout}${r.stderr}`).toBe(5);
      expect(r.json?.error, label).toMatchObject({ code: 'DISK_FULL', exit: 5 });
      expect(r.json!.error!.message, label).toContain(mnt);
    });
    // Only the filler; finetune's run folder may remain as an empty folder (reported in docs).
    expect(listTree(mnt).filter((p) => !p.endsWith('/'))).toEqual(['filler']);
  }, 300_000);

  /**
   * finetune on the mount with `leaveBytes` free: exit 5 DISK_FULL, only complete artefacts and
   * no leftovers; then, with the filler gone, --resume finishes cleanly. Returns both runs and
   * the audit after the failure for what each case checks besides.
   */
  async function fullDiskThenResume(leaveBytes: number) {
    rmSync(join(mnt, 'filler'), { force: true });
    for (const p of listTree(mnt).reverse()) rmSync(join(mnt, p), { recursive: true, force: true });
    fill(mnt, leaveBytes);
    const args = ['finetune', LLAMA, '-o', join(mnt, 'run'), ...TRAIN, '--steps', '2', '--save-every', '1', '--json'];
    const failed = await apex(args, { home: join(ws, 'home') });
    expect(failed.status, failed.stderr).toBe(5);
    expect(failed.json?.error).toMatchObject({ code: 'DISK_FULL', exit: 5 });
    const audit = await auditOutput(mnt);
    expect(audit.problems).toEqual([]);
    expect(audit.leftovers).toEqual([]);
    rmSync(join(mnt, 'filler'));
    const resumed = await apex([...args, '--resume'], { home: join(ws, 'home') });
    expect(resumed.status, resumed.stderr).toBe(0);
    expect((await auditOutput(mnt)).problems).toEqual([]);
    return { failed, audit, resumed };
  }

  it('finetune with room for the analysis but not for one checkpoint: exit 5 before the first step, --resume finishes once space is freed', async () => {
    // Room for the analysis (~150 kB) but not for the first trainer checkpoint (~16 MB): the
    // trainer's up-front check refuses before training. A dry run says so first, writing nothing.
    for (const p of listTree(mnt).reverse()) rmSync(join(mnt, p), { recursive: true, force: true });
    fill(mnt, 400_000);
    const dry = await apex(['finetune', LLAMA, '-o', join(mnt, 'run'), ...TRAIN, '--steps', '2', '--save-every', '1', '--json', '--dry-run'], { home: join(ws, 'home') });
    expect(dry.status, dry.stderr).toBe(5);
    expect(dry.json?.error).toMatchObject({ code: 'DISK_FULL', exit: 5 });
    expect(listTree(mnt)).toEqual(['filler']);
    const { failed, audit } = await fullDiskThenResume(400_000);
    expect(failed.json!.error!.message).toContain('checkpoints');
    expect(audit.complete).toContain('analysis:run/analysis'); // the step before training stays, complete
    // With the stage complete and the disk full again, --force frees the stage folder before the
    // trainer looks: its dry run counts that room and agrees with the real command.
    fill(mnt, 400_000);
    const force = ['finetune', LLAMA, '-o', join(mnt, 'run'), ...TRAIN, '--steps', '2', '--save-every', '1', '--json', '--force'];
    const before = listTree(mnt);
    const dryForce = await apex([...force, '--dry-run'], { home: join(ws, 'home') });
    expect(listTree(mnt)).toEqual(before);
    const realForce = await apex(force, { home: join(ws, 'home') });
    expect(dryForce.status, dryForce.stderr).toBe(realForce.status);
    expect(realForce.status, realForce.stderr).toBe(0);
  }, 300_000);

  it('finetune running out of space mid-training (room for one checkpoint, not two): exit 5, the first checkpoint kept, --resume continues from it', async () => {
    const { failed, resumed } = await fullDiskThenResume(24_000_000);
    expect(failed.json!.error!.message).toContain('step-00000002');
    expect(resumed.json?.data).toMatchObject({ startStep: 1, steps: 2 });
  }, 300_000);
});
