// Numerical guards (issue 8): NaN/Inf in a weight a command computes with (a copy of
// llama-mha-f32 with one poisoned element, f32 NaN / f32 +Inf / bf16 +Inf), produced by training
// (a learning rate of 1e30 without clipping) or by fusion (NaN in an operator file) fails the
// command with exit 6 and writes no result. A poisoned weight is refused when it is read
// (src/model/finite-check.ts), so the message names the tensor and its file for every command.
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

const BF16_INF = 0x7f80;
const nanModel = join(ws, 'nan-model');
const infModel = join(ws, 'inf-model');
const bf16InfModel = join(ws, 'bf16-inf-model');
const ops = join(ws, 'ops.safetensors');
const nanOps = join(ws, 'nan-ops.safetensors');

const GENERATE = ['--max-new-tokens', '2', '--backend', 'wasm', '--ids-out', 'ids.safetensors'];

const CASES: Record<string, string[]> = {
  'eval, NaN weight': ['eval', nanModel, ...SMALL],
  'eval, Inf weight': ['eval', infModel, ...SMALL],
  'eval, bf16 Inf weight': ['eval', bf16InfModel, ...SMALL],
  'analyze, NaN weight': ['analyze', nanModel, '-o', 'out', ...SMALL],
  'analyze, bf16 Inf weight': ['analyze', bf16InfModel, '-o', 'out', ...SMALL],
  'finetune, NaN weight': ['finetune', nanModel, '-o', 'out', ...TRAIN, '--steps', '2'],
  'finetune, divergence (lr 1e30, no clipping)': ['finetune', LLAMA, '-o', 'out', ...TRAIN, '--steps', '3', '--lr', '1e30', '--grad-clip', '0'],
  'expand, NaN in the operator file': ['expand', LLAMA, '--operators', nanOps, '-o', 'out'],
  'expand, NaN weight the operators change': ['expand', nanModel, '--operators', ops, '-o', 'out'],
  'expand, bf16 Inf weight the operators change': ['expand', bf16InfModel, '--operators', ops, '-o', 'out'],
  'generate, NaN weight': ['generate', nanModel, ...GENERATE],
  'generate, Inf weight': ['generate', infModel, ...GENERATE],
  'generate, bf16 Inf weight': ['generate', bf16InfModel, ...GENERATE],
};

/** What the load check says about the poisoned element (index 5) of each model. */
const NAMED: Record<string, string> = {
  [nanModel]: `${POISONED} in ${join(nanModel, 'model.safetensors')}: 1 non-finite value (first at index 5: NaN)`,
  [infModel]: `${POISONED} in ${join(infModel, 'model.safetensors')}: 1 non-finite value (first at index 5: Inf)`,
  [bf16InfModel]: `${POISONED} in ${join(bf16InfModel, 'model.safetensors')}: 1 non-finite value (first at index 5: Inf)`,
};

describe('non-finite values: exit 6, nothing written', () => {
  const results = new Map<string, { result: CliResult; files: string[] }>();

  beforeAll(async () => {
    await ensureBuilt(['eval', 'analyze', 'finetune', 'expand', 'generate']);
    await copyFixture('llama-mha-f32', nanModel, 'F32', new Map([[POISONED, new Map([[5, NAN]])]]));
    await copyFixture('llama-mha-f32', infModel, 'F32', new Map([[POISONED, new Map([[5, INF]])]]));
    await copyFixture('llama-mha-f32', bf16InfModel, 'BF16', new Map([[POISONED, new Map([[5, BF16_INF]])]]));
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
    // Files only (a stage that fails removes the run folder it created; folders are not listed).
    expect(files).toEqual([]);
  };

  /** Exit 6, nothing written, and the message names the poisoned tensor, its file and the element. */
  const poisoned = (name: string) => {
    exit6(name, /^NON_FINITE$/);
    expect(results.get(name)!.result.json?.error?.message, name).toContain(NAMED[CASES[name]![1]!]!);
  };

  it('eval: a NaN or Inf weight (f32 or bf16) is exit 6 naming the tensor', () => {
    for (const name of ['eval, NaN weight', 'eval, Inf weight', 'eval, bf16 Inf weight']) poisoned(name);
  });

  it('analyze and finetune: a poisoned weight stops the command before it writes, naming the tensor', () => {
    for (const name of ['analyze, NaN weight', 'analyze, bf16 Inf weight', 'finetune, NaN weight']) poisoned(name);
  });

  it('generate: a poisoned weight is exit 6 naming the tensor, no --ids-out file', () => {
    for (const name of ['generate, NaN weight', 'generate, Inf weight', 'generate, bf16 Inf weight']) poisoned(name);
  });

  it('finetune: divergence to NaN is exit 6 naming the step, no stage files', () => {
    const { result } = results.get('finetune, divergence (lr 1e30, no clipping)')!;
    expect(result.status, result.stderr).toBe(6);
    expect(result.json?.error?.message).toMatch(/(loss|gradient).*(NaN|Inf).*step \d/);
    const files = results.get('finetune, divergence (lr 1e30, no clipping)')!.files;
    for (const f of ['operators.safetensors', 'trained.safetensors', 'scores.safetensors', 'apex_run.json']) expect(files).not.toContain(`out/stages/1/${f}`);
    expect(files.some((f) => f.startsWith('out/stages/1/model'))).toBe(false);
  });

  it('expand: NaN in an operator file or a poisoned weight it changes is exit 6 naming the tensor, nothing written', () => {
    exit6('expand, NaN in the operator file', /NON_FINITE/);
    expect(results.get('expand, NaN in the operator file')!.result.json?.error?.message).toMatch(/model\.layers\.0\.mlp\.apex\.b_up/);
    for (const name of ['expand, NaN weight the operators change', 'expand, bf16 Inf weight the operators change']) poisoned(name);
  });
});
