/**
 * `apex run` as a CI job runs it: the built CLI in a child process. --print-config does no
 * work; every config problem is reported at once with exit 2 and nothing written; --json puts
 * exactly the summary on stdout; a changed config on a run folder exits 2; SIGINT exits 130
 * with the training checkpoints saved.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { configFolder, MICRO_DATA, microConfig } from './run-fixtures.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Builds dist/ when it is missing or older than the run sources. */
function ensureBuilt(): void {
  const built = join(ROOT, 'dist', 'commands', 'run.js');
  const sources = readdirSync(join(ROOT, 'src', 'pipeline')).filter((f) => f.startsWith('run')).map((f) => join('src', 'pipeline', f)).concat('src/commands/run.ts');
  if (existsSync(built) && sources.every((s) => statSync(join(ROOT, s)).mtimeMs <= statSync(built).mtimeMs)) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; the check below is what matters.
  }
  expect(existsSync(built), 'dist/commands/run.js must exist: run npm run build').toBe(true);
}

/** `apex run <args>` in `cwd`; with `openFiles`, under that open-file limit (`ulimit -n`). */
function apex(args: string[], cwd: string, options: { openFiles?: number } = {}): Promise<{ stdout: string; stderr: string; status: number }> {
  const command = [process.execPath, join(ROOT, 'bin', 'run.js'), 'run', ...args];
  const [file, argv] = options.openFiles === undefined ? [command[0]!, command.slice(1)] : ['bash', ['-c', `ulimit -n ${options.openFiles} && exec "$@"`, 'bash', ...command]];
  return new Promise((done) => {
    execFile(file, argv, { cwd, encoding: 'utf8', timeout: 100_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } }, (err, stdout, stderr) => {
      done({ stdout, stderr, status: err ? Number((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

/**
 * A 400-step micro run with --json, handed to `interrupt` once its first stage trains (or once
 * stderr shows `when`) (its child process, to signal); resolves when the run exits.
 */
async function interruptedRun(interrupt: (child: ChildProcess) => void, when = 'APEX stage 1 of 2: training'): Promise<{ dir: string; status: number | null; stdout: string; stderr: string }> {
  const { dir } = configFolder(microConfig('baseline: { vanilla: false }').replace('steps: 4', 'steps: 400'));
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'run.js'), 'run', 'run.yaml', '--json'], { cwd: dir, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  let stdout = '';
  let stderr = '';
  let training = false;
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const status = await new Promise<number | null>((done) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!training && stderr.includes(when)) {
        training = true;
        interrupt(child);
      }
    });
    child.on('exit', (code) => done(code));
  });
  return { dir, status, stdout, stderr };
}

beforeAll(() => ensureBuilt());

describe('apex run CLI', () => {
  it('--print-config prints the resolved embedded default and writes nothing', async () => {
    const { dir } = configFolder('');
    const r = await apex(['--print-config', 'stages.count=3'], dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('No config file: the embedded default');
    const printed = parseYaml(r.stdout) as { model: string; output: string; stages: { count: number }; data: { train: string[] } };
    expect(printed.stages.count).toBe(3);
    expect(printed.data.train).toEqual(['builtin:out-of-domain']);
    expect(printed.model).toBe(join(ROOT, 'fixtures', 'llama-mha-f32'));
    expect(printed.output).toBe(join(dir, 'apex-run'));
    expect(readdirSync(dir)).toEqual(['run.yaml']);

    const j = await apex(['--print-config', '--json', '-o', 'elsewhere'], dir);
    const json = JSON.parse(j.stdout) as { ok: boolean; data: { configHash: string; config: { output: string } } };
    expect(json.ok).toBe(true);
    expect(json.data.configHash).toMatch(/^[0-9a-f]{64}$/);
    expect(json.data.config.output).toBe(join(dir, 'elsewhere'));
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('reports every config problem at once with exit 2, and writes nothing', async () => {
    const { dir } = configFolder(microConfig('seed: -1\nstages2: 1\n').replace('steps: 4', 'steps: 0'));
    const r = await apex(['run.yaml', 'method=vanila', '--json'], dir);
    expect(r.status).toBe(2);
    const json = JSON.parse(r.stdout) as { ok: boolean; error: { code: string; message: string; exit: number } };
    expect(json.ok).toBe(false);
    expect(json.error).toMatchObject({ code: 'CONFIG_INVALID', exit: 2 });
    expect(json.error.message).toContain('4 problems');
    expect(json.error.message).toContain('stages.steps: must be an integer >= 1');
    expect(json.error.message).toContain('seed: must be an integer');
    expect(json.error.message).toContain("stages2: unknown key (did you mean 'stages'?)");
    expect(json.error.message).toContain("did you mean 'vanilla'?");
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('a missing data file exits 3 before the run folder is created', async () => {
    const { dir } = configFolder(microConfig());
    const r = await apex(['run.yaml', 'data.eval=missing.txt', '--json'], dir);
    expect(r.status).toBe(3);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, error: { exit: 3 } });
    expect(r.stdout).toContain('missing.txt');
    expect(readdirSync(dir)).toEqual(['run.yaml']);
    // Checked before the model is looked for (a Hub model would be downloaded first), naming each key and path.
    const both = await apex(['run.yaml', 'model=./no-such-model', 'data.train=gone.txt', 'data.eval=missing.txt', '--json'], dir);
    expect(both.status).toBe(3);
    const message = JSON.parse(both.stdout).error.message as string;
    expect(message).toMatch(/^2 data paths of the config cannot be read:\n  data\.train: .*gone\.txt: data path not found \(ENOENT\)\n  data\.eval: .*missing\.txt: data path not found/);
    expect(message).not.toContain('no-such-model');
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('refuses config values the trainer cannot honour, before any work', async () => {
    const { dir } = configFolder(microConfig());
    const r = await apex(['run.yaml', 'optimizer.warmup_fraction=0.1'], dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('optimizer.warmup_fraction');
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('an argument with a misplaced = is a malformed override, not a config file to look for', async () => {
    const { dir } = configFolder(microConfig());
    const r = await apex(['run.yaml', '=3'], dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("override '=3': expected key=value");
  });

  it('refuses a LoRA rank beyond the model before any work, naming the config key', async () => {
    const { dir } = configFolder(microConfig());
    const r = await apex(['run.yaml', 'method=lora', 'lora.rank=100000'], dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/lora\.rank must be an integer in \[1, \d+\] for this model .*, got 100000/);
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('--json prints only the summary; a different config on the same folder exits 2', async () => {
    const { dir } = configFolder(microConfig('baseline: { vanilla: false }'));
    const r = await apex(['run.yaml', '--json'], dir);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { ok: boolean; data: { schema: string; perplexity: { before: number; final: number; baseline: number | null; stages: number[] } } };
    expect(json.ok).toBe(true);
    expect(json.data.schema).toBe('apex.run/1');
    expect(json.data.perplexity.stages).toHaveLength(2);
    expect(json.data.perplexity.baseline).toBeNull();
    expect(json.data.perplexity.final).toBeLessThan(json.data.perplexity.before);
    expect(r.stderr).toContain('APEX stage 2 of 2: training');
    expect(existsSync(join(dir, 'apex-run', 'stages', '2', 'model', 'model.safetensors'))).toBe(true);

    const changed = await apex(['run.yaml', 'stages.count=3', '--json'], dir);
    expect(changed.status).toBe(2);
    const refusal = JSON.parse(changed.stdout) as { error: { code: string; message: string } };
    expect(refusal.error.code).toBe('RUN_CONFIG_CHANGED');
    expect(refusal.error.message).toContain('--force');
    expect(existsSync(join(dir, 'apex-run', 'stages', '3'))).toBe(false);
  });

  it('SIGINT stops with exit 130 and the training checkpoint saved', async () => {
    const { dir, status, stdout, stderr } = await interruptedRun((child) => setTimeout(() => child.kill('SIGINT'), 1500));
    expect(status, stderr).toBe(130);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', exit: 130 } });
    // `apex run` has no --resume: the message says how it continues
    expect((JSON.parse(stdout) as { error: { message: string } }).error.message).toMatch(/saved a checkpoint, run the same apex run command again to continue/);
    const checkpoints = join(dir, 'apex-run', 'stages', '1', 'checkpoints');
    expect(readdirSync(checkpoints).some((f) => /^step-\d{8}$/.test(f))).toBe(true);
    expect(existsSync(join(dir, 'apex-run.lock'))).toBe(false);
  });

  it('SIGINT before training (hashing, data, evaluation) also says how the run continues', async () => {
    // Before, only the trainer's message did; an interruption elsewhere said just "interrupted by SIGINT".
    const { status, stdout, stderr } = await interruptedRun((child) => child.kill('SIGINT'), 'starting run');
    expect(status, stderr).toBe(130);
    const body = JSON.parse(stdout) as { ok: boolean; error: { code: string; exit: number; message: string } };
    expect(body.error).toMatchObject({ code: 'INTERRUPTED', exit: 130 });
    expect(body.error.message).toMatch(/^interrupted by SIGINT; run the same apex run command again to continue$/);
  });

  it('--dry-run of a LoRA run names the rank and alpha it would train with', async () => {
    // Before, the plan showed only the trainable count: with lora.match_params, which rank the
    // match picked was in the --json plan only.
    const { dir } = configFolder(microConfig());
    const r = await apex(['run.yaml', 'method=lora', 'lora.rank=4', 'baseline.vanilla=false', '--dry-run'], dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^lora \(rank 4, alpha 8\): 2 stages of 4 steps/m);
    expect(readdirSync(dir)).toEqual(['run.yaml']);
  });

  it('--dry-run with -o through a file exits 2 (OUTPUT_NOT_WRITABLE) as the run does, not 3 with a raw ENOTDIR', async () => {
    const { dir } = configFolder(microConfig());
    writeFileSync(join(dir, 'a-file'), 'not a folder');
    for (const dry of [['--dry-run'], []]) {
      const r = await apex(['run.yaml', '-o', 'a-file/run', '--json', ...dry], dir);
      expect(r.status, r.stdout).toBe(2);
      expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe('OUTPUT_NOT_WRITABLE');
    }
  });

  it('a rerun over a data folder of more files than the open-file limit allows at once still works', async () => {
    // The rerun compares every data file's sha256 with the run's record: all at once it opened
    // each file together and failed with EMFILE (exit 5) past the limit; one at a time it does not.
    const { dir } = configFolder('');
    const data = join(dir, 'data');
    mkdirSync(data);
    const text = readFileSync(MICRO_DATA[0]!, 'utf8');
    for (let i = 0; i < 300; i++) writeFileSync(join(data, `doc${String(i).padStart(3, '0')}.txt`), text.slice((i * 997) % 20000, ((i * 997) % 20000) + 600));
    writeFileSync(join(dir, 'run.yaml'), microConfig('baseline: { vanilla: false }').replace(/train: \[[^\]]*\]/, `train: [${data}]`).replace('stages: { count: 2, steps: 4 }', 'stages: { count: 1, steps: 1 }'));
    expect((await apex(['run.yaml', '--json'], dir)).status).toBe(0);
    const limited = await apex(['run.yaml', '--json'], dir, { openFiles: 200 });
    expect(limited.status, limited.stdout).toBe(0);
    expect((JSON.parse(limited.stdout) as { data: { invocation: { start: string } } }).data.invocation.start).toBe('resumed');
  });

  it('a second signal leaves at once, still with the --json envelope on stdout (exit 130)', async () => {
    // A CI cancellation sends SIGINT, then SIGTERM a few seconds later: the job's summary.json must
    // still say what happened, not be empty. Sent together, they may be handled in either order:
    // the second one decides the message.
    const { status, stdout, stderr } = await interruptedRun((child) => {
      child.kill('SIGINT');
      child.kill('SIGTERM');
    });
    expect(status, stderr).toBe(130);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', exit: 130, message: expect.stringMatching(/^interrupted again by SIG(INT|TERM): left at once/) } });
  });
});
