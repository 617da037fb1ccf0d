// Two behaviours of the base command (src/cli/base-command.ts), through the built CLI:
//
// 1. A signal that arrives while the command's last work does not poll it still means
//    "interrupted": run() checks the abort signal once execute() has returned and throws
//    InterruptedError ("… after the work had finished; its outputs are complete"), so the caller
//    gets exit 130, and with --json the failure envelope, never ok: true.
//    Made deterministic without sleeps: the model's config.json is a FIFO, so `apex inspect`
//    waits in its read (inspectCheckpoint, which takes no abort signal) until this test writes it.
//    The test sends the signal only once the child has opened the FIFO, and writes config.json
//    only once a preloaded observer has said on stderr that the signal was delivered: its listener
//    and the base command's are called in one synchronous emit, so by then the abort is set.
// 2. APEX_DEBUG=1 with --json: an internal error (exit 1) puts its stack trace on stderr and
//    stdout stays exactly the one JSON envelope; without APEX_DEBUG there is no stack, and errors
//    with a documented exit code (here 3) never get one. apex has no internal error a user can
//    provoke on purpose, so a preloaded module makes fs.promises.stat throw a TypeError for the
//    model's weights file, which inspectCheckpoint stats after reading the headers.
import { execFileSync } from 'node:child_process';
import { constants, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { apex, ensureBuilt, LLAMA, startApex, workspace, type CliResult } from '../reliability/cli.js';

const home = workspace('late-signal-debug');
beforeAll(() => ensureBuilt(['inspect']));

/** A copy of llama-mha-f32 (links to its files) in `dir`, with config.json left to the caller. */
function modelWithoutConfig(dir: string): void {
  mkdirSync(dir);
  for (const f of readdirSync(LLAMA)) if (f !== 'config.json') symlinkSync(join(LLAMA, f), join(dir, f));
}

const MARK = '[test observer] signal delivered';

describe('a signal that arrives after the work has stopped polling for it', () => {
  const observer = join(home, 'signal-observer.mjs');
  writeFileSync(observer, `for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.stderr.write(${JSON.stringify(`${MARK}\n`)}));\n`);
  let n = 0;

  /** `apex inspect <model with a FIFO config.json> [--json]`, signalled while it waits in that read. */
  async function lateSignal(sig: NodeJS.Signals, json: boolean): Promise<CliResult> {
    const dir = join(home, `fifo-model-${++n}`);
    modelWithoutConfig(dir);
    const fifo = join(dir, 'config.json');
    execFileSync('mkfifo', [fifo]);
    const child = startApex(['inspect', dir, ...(json ? ['--json'] : [])], { home, nodeArgs: ['--import', pathToFileURL(observer).href] });
    let stdout = '';
    let stderr = '';
    let delivered!: () => void;
    const signalled = new Promise<void>((r) => (delivered = r));
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.includes(MARK)) delivered();
    });
    const exited = new Promise<CliResult>((done) => child.on('close', (status, signal) => done({ status, signal, stdout, stderr })));
    const early = exited.then((r) => { throw new Error(`apex exited before it was signalled (${r.status ?? r.signal}): ${r.stdout}${r.stderr}`); });
    early.catch(() => {}); // rejects at every exit; only read while the child should still run
    // Opening the FIFO for writing returns once the child has opened it for reading.
    const writer = open(fifo, 'w');
    try {
      await Promise.race([writer, early]);
    } catch (e) {
      // Let the pending open return (a reader of our own), then report why the child left.
      (await open(fifo, constants.O_RDONLY | constants.O_NONBLOCK)).close().catch(() => {});
      await (await writer).close();
      throw e;
    }
    const fd = await writer;
    child.kill(sig);
    await Promise.race([signalled, early]);
    await fd.writeFile(readFileSync(join(LLAMA, 'config.json')));
    await fd.close();
    const r = await exited;
    try {
      return { ...r, json: JSON.parse(r.stdout) as CliResult['json'] };
    } catch {
      return r;
    }
  }

  const LATE = /^interrupted by (SIGINT|SIGTERM) after the work had finished; its outputs are complete$/;

  it('--json: exit 130 and the INTERRUPTED envelope (not ok: true) on stdout', async () => {
    const r = await lateSignal('SIGINT', true);
    expect(r.status, r.stderr).toBe(130);
    expect(r.json, r.stdout).toBeDefined(); // stdout is one JSON document
    expect(r.json).toEqual({ ok: false, error: { code: 'INTERRUPTED', exit: 130, message: expect.stringMatching(LATE) } });
    expect(r.json?.error?.message).toContain('SIGINT');
  });

  it('SIGTERM without --json: the report is printed, then apex: error [INTERRUPTED] and exit 130', async () => {
    const r = await lateSignal('SIGTERM', false);
    expect(r.status, r.stderr).toBe(130);
    expect(r.stdout).toMatch(/validation: ok/); // the work had finished
    expect(r.stderr).toContain('apex: error [INTERRUPTED]: interrupted by SIGTERM after the work had finished; its outputs are complete\n');
  });
});

describe('a signal while the --json envelope is being written', () => {
  // A preloaded module signals the process itself as the success envelope is written: with the
  // base command's handlers still installed the write completes and the answer stands (exit 0,
  // the whole envelope); before, they were removed first, and the signal killed the process.
  const signaller = join(home, 'signal-at-envelope.mjs');
  writeFileSync(
    signaller,
    `const write = process.stdout.write.bind(process.stdout);\n` +
      `let sent = false;\n` +
      `process.stdout.write = (chunk, ...rest) => { const r = write(chunk, ...rest); if (!sent && String(chunk).includes('"ok": true')) { sent = true; process.kill(process.pid, 'SIGTERM'); } return r; };\n`,
  );

  it('exits 0 with the whole ok: true envelope, not killed mid-answer', async () => {
    const r = await apex(['inspect', LLAMA, '--json'], { home, nodeArgs: ['--import', pathToFileURL(signaller).href], timeoutMs: 60_000 });
    expect([r.status, r.signal], r.stderr).toEqual([0, null]);
    expect(r.json).toMatchObject({ ok: true });
  });
});

describe('a signal while the command is still loading', () => {
  // Loading oclif, the command and TensorFlow.js takes about a second (more on a busy machine)
  // before the command installs its handlers; a signal then killed the process with no answer
  // (status null, no envelope). A module-loading hook signals the process when oclif starts to
  // load, which is before any command exists.
  const hooks = join(home, 'signal-at-oclif-hooks.mjs');
  writeFileSync(
    hooks,
    `let sent = false;\n` +
      `export async function load(url, context, next) {\n` +
      `  if (!sent && url.includes('/@oclif/core/')) { sent = true; process.kill(process.pid, 'SIGTERM'); }\n` +
      `  return next(url, context);\n` +
      `}\n`,
  );
  const register = join(home, 'signal-at-oclif.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);

  it('--json: exit 130 and the INTERRUPTED envelope once the command starts, nothing done', async () => {
    const out = join(home, 'loading-signal-analysis');
    const r = await apex(['analyze', LLAMA, '-o', out, '--json'], { home, nodeArgs: ['--import', pathToFileURL(register).href], timeoutMs: 60_000 });
    expect([r.status, r.signal], r.stderr).toEqual([130, null]);
    expect(r.json).toEqual({ ok: false, error: { code: 'INTERRUPTED', exit: 130, message: expect.stringContaining('SIGTERM') } });
    expect(existsSync(out)).toBe(false);
  });
});

describe('APEX_DEBUG with --json', () => {
  const dir = join(home, 'faulty-model');
  modelWithoutConfig(dir);
  symlinkSync(join(LLAMA, 'config.json'), join(dir, 'config.json'));
  const weights = join(dir, 'model.safetensors');
  const fault = join(home, 'stat-fault.mjs');
  writeFileSync(
    fault,
    [
      "import fsp from 'node:fs/promises';",
      "import { syncBuiltinESMExports } from 'node:module';",
      'const real = fsp.stat;',
      'fsp.stat = function stat(path, ...rest) {',
      `  if (String(path) === ${JSON.stringify(weights)}) throw new TypeError('injected internal failure (test)');`,
      '  return real.call(this, path, ...rest);',
      '};',
      'syncBuiltinESMExports();',
      '',
    ].join('\n'),
  );
  const nodeArgs = ['--import', pathToFileURL(fault).href];
  const FRAME = /^\s+at \S/m;

  it('an internal error: the envelope alone on stdout, the stack trace on stderr', async () => {
    const r = await apex(['inspect', dir, '--json'], { home, nodeArgs, env: { APEX_DEBUG: '1' }, timeoutMs: 60_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({ ok: false, error: { code: 'INTERNAL', exit: 1, message: 'injected internal failure (test)' } });
    expect(r.stdout).not.toMatch(FRAME);
    expect(r.stderr).toMatch(/^TypeError: injected internal failure \(test\)$/m);
    expect(r.stderr).toMatch(FRAME);
    // The frames reach into apex: the call that failed and the command that made it (dist/*.js,
    // or src/*.ts where the child inherits --enable-source-maps from the test runner).
    expect(r.stderr).toMatch(/^\s+at inspectCheckpoint \(.*(dist\/io\/inspect\.js|src\/io\/inspect\.ts):\d+:\d+\)$/m);
    expect(r.stderr).toMatch(/^\s+at async Inspect\.execute \(.*(dist\/commands\/inspect\.js|src\/commands\/inspect\.ts):\d+:\d+\)$/m);
  });

  it.each([undefined, '0', 'false'])('the same failure with APEX_DEBUG=%s: no stack trace', async (value) => {
    const r = await apex(['inspect', dir, '--json'], { home, nodeArgs, env: { APEX_DEBUG: value }, timeoutMs: 60_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.json).toEqual({ ok: false, error: { code: 'INTERNAL', exit: 1, message: 'injected internal failure (test)' } });
    expect(r.stderr).not.toMatch(FRAME);
    expect(r.stderr).not.toContain('TypeError');
  });

  it('a documented failure (missing model folder, exit 3) gets no stack trace even with APEX_DEBUG', async () => {
    const r = await apex(['inspect', join(home, 'no-such-model'), '--json'], { home, env: { APEX_DEBUG: '1' }, timeoutMs: 60_000 });
    expect(r.status, r.stderr).toBe(3);
    expect(r.json).toMatchObject({ ok: false, error: { code: 'NOT_FOUND', exit: 3 } });
    expect(r.stderr).not.toMatch(FRAME);
  });
});
