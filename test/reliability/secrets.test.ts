// Secrets (issue 8): with HF_TOKEN set, every command working on a private model of a fake Hub
// (127.0.0.1, the token really sent) or on a local model prints the token nowhere: not on
// stdout or stderr, not in --json output or error messages (a rejected token included), and not
// in any file it writes (apex_run.json, analysis.json, metrics.jsonl, summary.json, run.json,
// model cards, the HF cache). Each command gets its own token, so one command registering its
// token for redaction cannot hide another command's leak.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { FakeHub } from '../hub/fake-hub.js';
import { commitHash, singleFileRepo } from '../hub/fixture-repos.js';
import { apexInProcess, ensureBuilt, LLAMA, workspace, type CliResult } from './cli.js';

const REPO = 'secret-org/private-model';
const ws = workspace('secrets');
const home = join(ws, 'hf-home');
const ids = join(ws, 'ids.safetensors');
const config = join(ws, 'run.yaml');

/** A token of the Hub's form, distinct per command. */
function token(i: number): string {
  return `hf_SecretToken${String(i).padStart(2, '0')}xyzABCDEFGHIJKLMNOPQRS`;
}

const CASES: [label: string, args: string[], exit: number][] = [
  ['inspect', ['inspect', REPO], 0],
  ['generate', ['generate', REPO, '--input-ids', ids, '--max-new-tokens', '2', '--backend', 'wasm', '--ids-out', join(ws, 'gen.safetensors')], 0],
  ['eval', ['eval', REPO, '--input-ids', ids, '--seq-len', '16', '--backend', 'wasm'], 0],
  ['analyze', ['analyze', REPO, '--input-ids', ids, '--seq-len', '16', '--batch-size', '2', '-o', join(ws, 'analysis'), '--backend', 'wasm'], 0],
  ['finetune', ['finetune', REPO, '--input-ids', ids, '--seq-len', '16', '--batch-size', '2', '--steps', '1', '-o', join(ws, 'ft'), '--backend', 'wasm'], 0],
  ['expand', ['expand', '--run', join(ws, 'ft'), '--stage', '1', '--force'], 0],
  ['run', ['run', config, '-o', join(ws, 'run')], 0],
  ['env', ['env'], 0],
  ['a token the Hub rejects', ['inspect', 'secret-org/other-private'], 3],
  ['offline cache miss', ['inspect', 'secret-org/never-downloaded'], 4],
];

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe('HF_TOKEN never appears in output or files', () => {
  let hub: FakeHub;
  const results: CliResult[] = [];

  beforeAll(async () => {
    await ensureBuilt(CASES.map(([, args]) => args[0]!));
    hub = await new FakeHub([
      { id: REPO, refs: { main: commitHash('secret') }, commits: { [commitHash('secret')]: singleFileRepo() }, private: true },
      { id: 'secret-org/other-private', refs: { main: commitHash('other') }, commits: { [commitHash('other')]: singleFileRepo() }, private: true },
    ]).start();
    CASES.forEach((_, i) => { if (CASES[i]![0] !== 'a token the Hub rejects') hub.tokens.set(token(i), { gatedAccess: true }); });
    // Token ids within stories260K's vocabulary (512): 6 sequences of 16.
    await writeSafetensors(ids, [i32Tensor('input_ids', [6, 16], Int32Array.from({ length: 96 }, (_, k) => 1 + ((k * 37) % 500)))]);
    writeFileSync(config, `model: ${LLAMA}\nbackend: wasm\ndata: { train: [builtin:in-domain], seq_len: 16, eval_samples: 2, calibration_samples: 4 }\nstages: { count: 1, steps: 1 }\noptimizer: { batch_size: 2 }\nbaseline: { vanilla: false }\n`);
    results.push(...(await apexInProcess(
      CASES.map(([label, args], i) => ({
        args: [...args, ...(i % 3 === 2 ? [] : ['--json'])],
        cwd: ws,
        home,
        env: { HF_TOKEN: token(i), HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: label === 'offline cache miss' ? '1' : undefined },
      })),
      ws,
    )));
  }, 300_000);
  afterAll(async () => { await hub?.close(); });

  it('every command ran with its expected exit code, and the Hub saw the tokens', () => {
    results.forEach((r, i) => expect(r.status, `${CASES[i]![0]}: ${r.stdout.slice(-800)}${r.stderr.slice(-800)}`).toBe(CASES[i]![2]));
    const sent = new Set(hub.requests.map((q) => q.authorization).filter((a) => a !== undefined));
    expect(sent.has(`Bearer ${token(0)}`)).toBe(true); // inspect downloaded the private model
    expect(sent.has(`Bearer ${token(8)}`)).toBe(true); // and the rejected token was sent too
    expect(results[8]!.stdout + results[8]!.stderr).toMatch(/401|token/i);
  });

  it('no token in stdout, stderr or --json output', () => {
    results.forEach((r, i) => {
      for (let t = 0; t < CASES.length; t++) expect(r.stdout + r.stderr, `${CASES[i]![0]}`).not.toContain(token(t).slice(3));
    });
  });

  it('no token in any file written (outputs, provenance, metrics, summaries, the HF cache)', () => {
    const files = filesUnder(ws);
    const written = files.filter((f) => /apex_run\.json|analysis\.json|metrics\.jsonl|summary\.json|run\.json|README\.md/.test(f));
    expect(written.length).toBeGreaterThan(5);
    for (const f of files) {
      const text = readFileSync(f).toString('latin1');
      for (let t = 0; t < CASES.length; t++) expect(text.includes(token(t).slice(3)), `${f} holds token ${t}`).toBe(false);
    }
  });
});
