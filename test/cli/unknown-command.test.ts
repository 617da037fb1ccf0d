// An unknown command (oclif's command_not_found hook, src/cli/command-not-found.ts) is a usage
// error like any other: exit 2, a message pointing at --help with the closest command when it
// looks like a typo, and with --json the `{ok:false,error}` envelope on stdout.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { closestCommand, unknownCommandError } from '../../src/cli/command-not-found.js';
import { apex, ensureBuilt, ROOT, workspace, type CliResult } from '../reliability/cli.js';

const COMMANDS = ['analyze', 'env', 'eval', 'expand', 'finetune', 'generate', 'inspect', 'run'];

describe('unknown command messages', () => {
  it('suggests the closest command within 2 edits, and nothing further away', () => {
    expect(closestCommand('evl', COMMANDS)).toBe('eval');
    expect(closestCommand('expnad', COMMANDS)).toBe('expand'); // one transposition
    expect(closestCommand('GENERAT', COMMANDS)).toBe('generate');
    expect(closestCommand('fintune', COMMANDS)).toBe('finetune');
    expect(closestCommand('nosuchcmd', COMMANDS)).toBeUndefined();
    expect(closestCommand('train', COMMANDS)).toBeUndefined(); // 3 edits from 'run'
  });

  it('tells an unknown command from a stray argument and a leading flag', () => {
    const unknown = unknownCommandError('evl', COMMANDS);
    expect([unknown.exit, unknown.code]).toEqual([2, 'UNKNOWN_COMMAND']);
    expect(unknown.message).toBe("unknown command 'evl'; run apex --help for the list (did you mean 'eval'?)");
    expect(unknownCommandError('frob:bar', COMMANDS).message).toBe("unknown command 'frob'; run apex --help for the list");
    const stray = unknownCommandError('env:foo', COMMANDS);
    expect([stray.exit, stray.code]).toEqual([2, 'UNEXPECTED_ARGUMENT']);
    expect(stray.message).toContain("unexpected argument 'foo' for 'apex env'");
    expect(unknownCommandError('--json', COMMANDS).message).toContain("expected a command before '--json'");
  });
});

describe('apex <unknown command> (built CLI)', () => {
  const home = join(workspace('unknown-command'), 'hf-home');
  const results = new Map<string, CliResult>();
  const LINES = ['nosuchcmd --json', 'evl --json', 'nosuchcmd', 'env foo --json', '--json'];

  beforeAll(async () => {
    await ensureBuilt(['eval']);
    expect(existsSync(join(ROOT, 'dist', 'cli', 'command-not-found.js')), 'run npm run build').toBe(true);
    const out = await Promise.all(LINES.map((l) => apex(l.split(' '), { home, timeoutMs: 60_000 })));
    LINES.forEach((l, i) => results.set(l, out[i]!));
  }, 120_000);

  it('--json: exit 2 and the error envelope on stdout', () => {
    const r = results.get('nosuchcmd --json')!;
    expect(r.status, r.stderr).toBe(2);
    expect(r.json).toEqual({ ok: false, error: { code: 'UNKNOWN_COMMAND', message: "unknown command 'nosuchcmd'; run apex --help for the list", exit: 2 } });
    expect(r.stderr).not.toContain('nosuchcmd');
    const typo = results.get('evl --json')!;
    expect(typo.status).toBe(2);
    expect(typo.json?.error?.message).toContain("(did you mean 'eval'?)");
  });

  it('without --json: exit 2, the message on stderr, nothing on stdout', () => {
    const r = results.get('nosuchcmd')!;
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain("apex: error [UNKNOWN_COMMAND]: unknown command 'nosuchcmd'; run apex --help for the list");
  });

  it('a stray argument after a command without arguments, and a bare flag, get the envelope too', () => {
    const stray = results.get('env foo --json')!;
    expect(stray.status).toBe(2);
    expect(stray.json?.error).toMatchObject({ code: 'UNEXPECTED_ARGUMENT', exit: 2 });
    expect(stray.json?.error?.message).toContain("'foo'");
    const flag = results.get('--json')!;
    expect(flag.status).toBe(2);
    expect(flag.json?.ok).toBe(false);
    expect(flag.json?.error?.code).toBe('UNKNOWN_COMMAND');
  });

  it('APEX_CONTENT_TYPE=json (oclif\'s environment form of --json) gets the envelope as the commands do', async () => {
    const r = await apex(['nosuchcmd'], { home, timeoutMs: 60_000, env: { APEX_CONTENT_TYPE: 'json' } });
    expect(r.status).toBe(2);
    expect(r.json?.error?.code).toBe('UNKNOWN_COMMAND');
    const command = await apex(['eval', 'no/such/folder'], { home, timeoutMs: 60_000, env: { APEX_CONTENT_TYPE: 'json' } });
    expect(command.json).toMatchObject({ ok: false, error: { exit: command.status } });
  });
});
