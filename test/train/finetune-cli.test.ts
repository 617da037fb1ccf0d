// `apex finetune` as a user runs it (the built CLI in a child process): contradictory flags
// exit 2 naming the flags before anything is written; a small run on llama-mha-f32 with the
// built-in corpus prints the trainable-parameter count and writes the stage and its fused model.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLAMA, tempRun } from './stage-fixtures.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const { dir: tmp, cleanup } = tempRun('finetune-cli');
afterAll(cleanup);

/** Builds dist/ when it is missing or older than any source file. */
function ensureBuilt(): void {
  const built = join(ROOT, 'dist', 'commands', 'finetune.js');
  const newest = (dir: string): number =>
    Math.max(...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  if (existsSync(built) && newest(join(ROOT, 'src')) <= statSync(built).mtimeMs) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; the check below is what matters.
  }
  expect(existsSync(built), 'dist/commands/finetune.js must exist: run npm run build').toBe(true);
}

function apex(args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'run.js'), 'finetune', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 300_000, env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(ensureBuilt);

// Every combination is checked in stage-options.test.ts; these two show the CLI path
// (oclif flags → settings → UsageError → exit 2 with the JSON error) before any work.
describe('contradictory flags: exit 2, the flags named, nothing written', () => {
  const cases: [string, string[], RegExp][] = [
    ['a setting for a baseline', ['--method', 'vanilla', '--setting', 'full', '--steps', '2'], /--setting applies only to --method apex/],
    ['two budgets', ['--steps', '2', '--tokens', '1k'], /either --steps or --tokens/],
    ['an evaluation batch of 0', ['--steps', '2', '--eval-batch-size', '0'], /--eval-batch-size[\s\S]*greater than or equal to 1/],
  ];
  for (const [name, flags, message] of cases) {
    it(name, () => {
      const out = join(tmp, name.replace(/\W+/g, '-'));
      const r = apex([LLAMA, '-o', out, '--json', ...flags]);
      expect(r.status, r.stderr).toBe(2);
      const body = JSON.parse(r.stdout) as { ok: boolean; error: { exit: number; message: string } };
      expect(body.ok).toBe(false);
      expect(body.error.exit).toBe(2);
      expect(body.error.message).toMatch(message);
      expect(existsSync(out)).toBe(false);
    });
  }
});

it('trains a stage of llama-mha-f32 on the built-in corpus, reports the trainable parameters, fuses it', () => {
  const out = join(tmp, 'run');
  const args = [LLAMA, '-o', out, '--corpus', 'in-domain', '--seq-len', '32', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--eval-batch-size', '1', '--steps', '2', '--lr', '1e-3', '--backend', 'wasm', '--setting', 'operators'];
  const r = apex(args);
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/trainable parameters: [\d,]+ of 1,328,256 \(\d+\.\d\d%\)/);
  for (const f of ['operators.safetensors', 'scores.safetensors', 'metrics.jsonl', 'loss.svg', 'apex_run.json', 'model/model.safetensors']) {
    expect(existsSync(join(out, 'stages', '1', f)), f).toBe(true);
  }
  expect(existsSync(join(out, 'analysis', 'stats.safetensors'))).toBe(true);
  // The held-out evaluations ran in batches of --eval-batch-size, not --batch-size.
  const details = (JSON.parse(readFileSync(join(out, 'stages', '1', 'apex_run.json'), 'utf8')) as { details: { eval: unknown; optimizer: { batchSize: number } } }).details;
  expect(details.eval).toEqual({ every: 0, batch_size: 1 });
  expect(details.optimizer.batchSize).toBe(2);
  const again = apex([...args, '--json']);
  expect(again.status).toBe(2);
  expect(JSON.parse(again.stdout).error.message).toMatch(/already complete.*--force/);
});

it('a model named ~/… (quoted, so apex expands it): --dry-run plans without writing; the LoRA stage records the folder and its adapter names it', () => {
  // Before, the record took the path as written (<cwd>/~/m), and the adapter, written after
  // training, failed on it as a Hub id: the trained stage was lost.
  const home = join(tmp, 'home');
  mkdirSync(home);
  symlinkSync(join(ROOT, 'fixtures', 'llama-mha-f32'), join(home, 'm'));
  const out = join(tmp, 'lora-home');
  const args = ['~/m', '-o', out, '--method', 'lora', '--lora-rank', '2', '--corpus', 'in-domain', '--seq-len', '16', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--steps', '1', '--backend', 'cpu', '--no-expand', '--json'];
  const env = { ...process.env, HOME: home };
  const dry = apex([...args, '--dry-run'], env);
  expect(dry.status, dry.stderr).toBe(0);
  const plan = JSON.parse(dry.stdout) as { data: { status: string; steps: number; plan: { tokensPerStep: number; memory: { totalBytes: number } } } };
  expect(plan.data.status).toBe('planned');
  expect([plan.data.steps, plan.data.plan.tokensPerStep]).toEqual([1, 32]);
  expect(existsSync(out)).toBe(false);
  const r = apex(args, env);
  expect(r.status, r.stderr).toBe(0);
  const record = JSON.parse(readFileSync(join(out, 'stages', '1', 'apex_run.json'), 'utf8')) as { base_model: string; details: { memory_estimate: { totalBytes: number } } };
  expect(record.base_model).toBe(join(home, 'm'));
  expect(record.details.memory_estimate.totalBytes).toBe(plan.data.plan.memory.totalBytes);
  const adapter = JSON.parse(readFileSync(join(out, 'stages', '1', 'adapter', 'adapter_config.json'), 'utf8')) as { base_model_name_or_path: string; revision: string | null };
  expect(adapter).toMatchObject({ base_model_name_or_path: join(home, 'm'), revision: null });
});

it('--resume where no checkpoint exists (a mistyped -o) warns that the stage starts from step 0, also with --json', () => {
  // Before, this was only a passing status line: the spinner overwrote it and plain (CI) output
  // throttled it away, so a resume that silently trained from scratch looked like a resume.
  const out = join(tmp, 'resume-nothing');
  const args = [LLAMA, '-o', out, '--corpus', 'in-domain', '--seq-len', '32', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--steps', '2', '--backend', 'wasm', '--resume', '--dry-run'];
  const plain = apex(args);
  expect(plain.status, plain.stderr).toBe(0);
  expect(plain.stderr).toMatch(/warning: nothing to resume: no checkpoint in \S+checkpoints; stage 1 starts from step 0/);
  const json = apex([...args, '--json']);
  expect(json.status, json.stderr).toBe(0);
  const body = JSON.parse(json.stdout) as { ok: boolean; warnings: string[] };
  expect(body.ok).toBe(true);
  expect(body.warnings.some((w) => /^nothing to resume: no checkpoint in /.test(w))).toBe(true);
  expect(existsSync(out)).toBe(false);
});

it('--dry-run with -o through a file exits 2 (OUTPUT_NOT_WRITABLE) as the real stage does, not 3 with a raw ENOTDIR', () => {
  const file = join(tmp, 'a-file');
  writeFileSync(file, 'not a folder');
  const args = [LLAMA, '-o', join(file, 'run'), '--corpus', 'in-domain', '--seq-len', '32', '--samples', '8', '--steps', '1', '--backend', 'wasm', '--json'];
  for (const r of [apex([...args, '--dry-run']), apex(args)]) {
    expect(r.status, r.stdout).toBe(2);
    expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe('OUTPUT_NOT_WRITABLE');
  }
});
