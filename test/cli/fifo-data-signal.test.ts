// --data a pipe whose writer keeps it open without writing (a generator that stalls, a FIFO
// someone forgot): SIGTERM must still end the command (exit 130, the --json envelope). The pipe
// used to be read by a blocking read in libuv's thread pool, which the signal could not end and
// which even process.exit() waits for: the process stayed until the writer wrote or closed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { BIN, childEnv, ensureBuilt, LLAMA, ROOT, startApex, workspace } from '../reliability/cli.js';

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

// --data /dev/stdin typed at a terminal (the pipe forgotten): the user presses Ctrl-C. A
// terminal is a character device, not a pipe: it was read by a blocking read in libuv's pool
// too, so the command stayed until Ctrl-D. `script` gives the command a terminal.
const hasScript = (() => {
  try {
    execFileSync('script', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
it.skipIf(!hasScript || process.platform !== 'linux')('SIGTERM ends an apex eval reading --data /dev/stdin from a terminal: exit 130, within seconds', { timeout: 60_000 }, async () => {
  const pidFile = join(home, 'tty-apex.pid');
  const inner = `echo $$ > '${pidFile}'; exec '${process.execPath}' '${BIN}' eval '${LLAMA}' --data /dev/stdin --backend wasm --json`;
  // script's own stdin: a pipe that stays open and silent, so the terminal has no input.
  const child = spawn('script', ['-qec', inner, '/dev/null'], { cwd: ROOT, env: childEnv(home), stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => { output += c.toString(); });
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  try {
    while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() === '') await new Promise((done) => setTimeout(done, 50));
    // Time to load the model and open the terminal.
    await new Promise((done) => setTimeout(done, 3000));
    const signalled = Date.now();
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((done) => setTimeout(() => done('hung'), 10_000))]);
    expect(code, output).toBe(130);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(output).toContain('INTERRUPTED');
  } finally {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
    } catch {
      // already gone
    }
    child.kill('SIGKILL');
  }
});
