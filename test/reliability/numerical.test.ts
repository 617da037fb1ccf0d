// Numerical guards (issue 8): NaN/Inf in a weight a command computes with (a copy of
// llama-mha-f32 with one poisoned element), produced by training (a learning rate of 1e30 without
// clipping) or by fusion (NaN in an operator file) fails the command with exit 6 and writes no
// result. The requirement that the message names the poisoned *tensor* is met by expand; for
// eval, analyze and finetune it is a known gap (they name the loss or the activation), kept
// here as `it.fails` so the test flips when the gap is closed.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { copyFixture, fixtureSpec, freshOperators, perturbOperators, writeOperators } from '../pipeline/expand-fixtures.js';
import { apexInProcess, ensureBuilt, listTree, LLAMA, workspace, type CliResult } from './cli.js';

const POISONED = 'model.layers.1.mlp.down_proj.weight';
const NAN = 0x7fc00000;
const INF = 0x7f800000;
const ws = workspace('numerical');
const home = join(ws, 'hf-home');
const TRAIN = ['--corpus', 'in-domain', '--seq-len', '16', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--backend', 'wasm'];
const SMALL = ['--samples', '2', '--seq-len', '16', '--backend', 'wasm'];

const nanModel = join(ws, 'nan-model');
const infModel = join(ws, 'inf-model');
const ops = join(ws, 'ops.safetensors');
const nanOps = join(ws, 'nan-ops.safetensors');

const CASES: Record<string, string[]> = {
  'eval, NaN weight': ['eval', nanModel, ...SMALL],
  'eval, Inf weight': ['eval', infModel, ...SMALL],
  'analyze, NaN weight': ['analyze', nanModel, '-o', 'out', ...SMALL],
  'finetune, NaN weight': ['finetune', nanModel, '-o', 'out', ...TRAIN, '--steps', '2'],
  'finetune, divergence (lr 1e30, no clipping)': ['finetune', LLAMA, '-o', 'out', ...TRAIN, '--steps', '3', '--lr', '1e30', '--grad-clip', '0'],
  'expand, NaN in the operator file': ['expand', LLAMA, '--operators', nanOps, '-o', 'out'],
  'expand, NaN weight the operators change': ['expand', nanModel, '--operators', ops, '-o', 'out'],
  'generate, NaN weight': ['generate', nanModel, '--max-new-tokens', '2', '--backend', 'wasm', '--ids-out', 'ids.safetensors'],
};

describe('non-finite values: exit 6, nothing written', () => {
  const results = new Map<string, { result: CliResult; files: string[] }>();

  beforeAll(async () => {
    await ensureBuilt(['eval', 'analyze', 'finetune', 'expand', 'generate']);
    await copyFixture('llama-mha-f32', nanModel, 'F32', new Map([[POISONED, new Map([[5, NAN]])]]));
    await copyFixture('llama-mha-f32', infModel, 'F32', new Map([[POISONED, new Map([[5, INF]])]]));
    const spec = await fixtureSpec('llama-mha-f32');
    const layers = perturbOperators(freshOperators(spec, 1, Array.from({ length: spec.numLayers }, () => ({ heads: true, channels: true }))), 2);
    await writeOperators(ops, layers, spec);
    const [first, ...rest] = layers;
    await writeOperators(nanOps, [{ ...first!, mlp: { ...first!.mlp!, bUp: new Float32Array(first!.mlp!.bUp.length).fill(NaN) } }, ...rest], spec);
    const names = Object.keys(CASES);
    const dirs = names.map((_, i) => join(ws, `case-${i}`));
    dirs.forEach((d) => mkdirSync(d));
    const out = await apexInProcess(names.map((n, i) => ({ args: [...CASES[n]!, '--json'], cwd: dirs[i]!, home })), ws);
    names.forEach((n, i) => results.set(n, { result: out[i]!, files: listTree(dirs[i]!).filter((p) => !p.endsWith('/')) }));
  }, 300_000);

  const exit6 = (name: string, code: RegExp) => {
    const { result, files } = results.get(name)!;
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(6);
    expect(result.json?.error?.code).toMatch(code);
    // Files only: a stage that fails in its analysis leaves its empty run folder (reported).
    expect(files).toEqual([]);
  };

  it('eval: a NaN or Inf weight is exit 6 instead of a perplexity of null', () => {
    exit6('eval, NaN weight', /NON_FINITE/);
    exit6('eval, Inf weight', /NON_FINITE/);
  });

  it('analyze and finetune: a NaN weight stops the command before it writes', () => {
    exit6('analyze, NaN weight', /NON_FINITE/);
    exit6('finetune, NaN weight', /NON_FINITE/);
  });

  it('finetune: divergence to NaN is exit 6 naming the step, no stage files', () => {
    const { result } = results.get('finetune, divergence (lr 1e30, no clipping)')!;
    expect(result.status, result.stderr).toBe(6);
    expect(result.json?.error?.message).toMatch(/(loss|gradient).*(NaN|Inf).*step \d/);
    const files = results.get('finetune, divergence (lr 1e30, no clipping)')!.files;
    for (const f of ['operators.safetensors', 'trained.safetensors', 'scores.safetensors', 'apex_run.json']) expect(files).not.toContain(`out/stages/1/${f}`);
    expect(files.some((f) => f.startsWith('out/stages/1/model'))).toBe(false);
  });

  it('expand: NaN in an operator file or in a weight it changes is exit 6 naming the tensor, nothing written', () => {
    exit6('expand, NaN in the operator file', /NON_FINITE/);
    expect(results.get('expand, NaN in the operator file')!.result.json?.error?.message).toMatch(/model\.layers\.0\.mlp\.apex\.b_up/);
    exit6('expand, NaN weight the operators change', /NON_FINITE/);
    expect(results.get('expand, NaN weight the operators change')!.result.json?.error?.message).toContain(POISONED);
  });

  // Known gaps (reported): the weight is read and used without a finiteness check, so the
  // failure surfaces later as a NaN loss or activation that does not name the tensor.
  it.fails('eval, analyze and finetune name the poisoned tensor', () => {
    for (const name of ['eval, NaN weight', 'analyze, NaN weight', 'finetune, NaN weight']) expect(results.get(name)!.result.json?.error?.message, name).toContain(POISONED);
  });

  it.fails('generate: a NaN weight is exit 6 (today it generates token 0 and exits 0)', () => {
    exit6('generate, NaN weight', /NON_FINITE/);
  });
});
