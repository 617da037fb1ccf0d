// --data a pipe whose writer keeps it open without writing (a generator that stalls, a FIFO
// someone forgot): SIGTERM must still end the command (exit 130, the --json envelope). The pipe
// used to be read by a blocking read in libuv's thread pool, which the signal could not end and
// which even process.exit() waits for: the process stayed until the writer wrote or closed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { ensureBuilt, LLAMA, startApex, workspace } from '../reliability/cli.js';

const home = workspace('fifo-data-signal');
beforeAll(() => ensureBuilt(['eval']));

it('SIGTERM ends an apex eval waiting on a silent pipe: exit 130 with the envelope, within seconds', { timeout: 60_000 }, async () => {
  const fifo = join(home, 'data.txt');
  const opened = join(home, 'opened');
  execFileSync('mkfifo', [fifo]);
  // The writer's open returns once apex has opened the pipe for reading: then it says so.
  const writer = spawn('sh', ['-c', `exec 3>"${fifo}"; : > "${opened}"; echo 'one line of text' >&3; sleep 60`], { stdio: 'ignore' });
  try {
    const child = startApex(['eval', LLAMA, '--data', fifo, '--backend', 'wasm', '--json'], { home });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
    while (!existsSync(opened)) await new Promise((done) => setTimeout(done, 50));
    await new Promise((done) => setTimeout(done, 300));
    const signalled = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((done) => setTimeout(() => done('hung'), 10_000))]);
    if (code === 'hung') child.kill('SIGKILL');
    expect(code).toBe(130);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', exit: 130 } });
  } finally {
    writer.kill();
  }
});
