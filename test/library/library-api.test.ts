// apex as a library (src/index.ts, the package's main): README's "Using apex as a library"
// example, driven only through the public entry the way a program using apex would —
// selectBackend → loadSequences → runAnalysis → runStage → runExpand → evaluateNll on the
// bundled llama-mha-f32 (it has a tokenizer) and a folder of text, on the cpu backend. Checked
// against independent truth: the fused checkpoint, evaluated afresh, gives the held-out loss the
// stage measured on the operator-augmented model; the stage selected the units of the analysis
// the caller made; the trainable counts are the element counts of the files written; the §7
// files exist; nothing is printed; bad input comes out as typed errors with a code and exit.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as apex from '../../src/index.js';
import {
  ApexError, InputError, SafetensorsFile, UsageError,
  evaluateNll, loadSequences, loadTokenizer, openModelForCompute, runAnalysis, runExpand, runStage, selectBackend,
  type NllResult,
} from '../../src/index.js';

const MODEL = 'fixtures/llama-mha-f32';
const DATA = 'fixtures/corpus/in-domain';
const run = mkdtempSync(join(tmpdir(), 'apex-library-'));
afterAll(() => rmSync(run, { recursive: true, force: true }));

/** The functions README's example calls, in its order. */
const EXAMPLE_FUNCTIONS = ['selectBackend', 'loadTokenizer', 'loadSequences', 'runAnalysis', 'runStage', 'runExpand', 'openModelForCompute', 'evaluateNll'];

// A library prints nothing of its own: every message goes to the callbacks it is given.
let printed: string[] = [];
beforeEach(() => {
  printed = [];
  const keep = (chunk: unknown) => { printed.push(String(chunk)); return true; };
  vi.spyOn(process.stdout, 'write').mockImplementation(keep);
  vi.spyOn(process.stderr, 'write').mockImplementation(keep);
  for (const method of ['log', 'info', 'warn', 'error', 'debug'] as const) vi.spyOn(console, method).mockImplementation((...a: unknown[]) => { printed.push(a.map(String).join(' ')); });
});
afterEach(() => vi.restoreAllMocks());

async function tensors(path: string): Promise<Map<string, { dtype: string; elements: number; i32?: Int32Array }>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, { dtype: string; elements: number; i32?: Int32Array }>();
    for (const t of f.tensors) {
      const elements = t.shape.reduce((a, b) => a * b, 1);
      let i32: Int32Array | undefined;
      if (t.dtype === 'I32') { const b = await f.readBytes(t.name); i32 = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); }
      out.set(t.name, { dtype: t.dtype, elements, ...(i32 ? { i32 } : {}) });
    }
    return out;
  } finally {
    await f.close();
  }
}

describe('apex as a library (src/index.ts)', () => {
  it('analysis → APEX stage → expand → eval: the fused model computes what the stage trained', async () => {
    const messages: string[] = [];
    const progress = (m: string) => messages.push(m);

    // --- README's example, step by step ---
    const backend = await selectBackend('cpu');
    const tokenizer = await loadTokenizer(MODEL);
    const data = { data: [DATA], tokenizer, seqLen: 32, seed: 0 };
    const train = await loadSequences({ ...data, split: 'train', samples: 16 });
    const heldout = await loadSequences({ ...data, split: 'heldout', samples: 4 });

    const analysis = await runAnalysis({ model: MODEL, output: join(run, 'analysis'), data: train, batchSize: 4, ratio: 0.375, seed: 0, backend: 'cpu', progress });
    const stage = await runStage({
      model: MODEL, modelDir: MODEL, run, stage: 1, method: 'apex', setting: 'operators', ratio: 0.375,
      train, eval: heldout, steps: 2, batchSize: 2, lr: 1e-2, expand: false, backend: 'cpu', progress,
    });
    const expanded = await runExpand({ run, stage: 1, progress });
    const fused = await openModelForCompute(expanded.output, { backend: 'cpu' });
    let nll: NllResult;
    try {
      nll = await evaluateNll(fused.source, heldout.sequences, { batchSize: 4 });
    } finally {
      await fused.checkpoint.close();
    }
    // --- end of the example ---

    expect(backend.name).toBe('cpu');
    expect(printed, 'the library printed').toEqual([]);
    expect(messages.length).toBeGreaterThan(0);
    expect(train.sequences.length).toBe(16);
    expect(heldout.sequences.length).toBe(4);
    expect(train.sequences.every((s) => s.length === 32)).toBe(true);

    // The stage used the caller's analysis (it did not run one of its own), and its operators
    // pair exactly the units that analysis selected.
    expect(analysis.output).toBe(join(run, 'analysis'));
    expect(messages.some((m) => m.startsWith("selecting stage 1's units by the existing analysis"))).toBe(true);
    expect(messages.some((m) => m.includes('running the analysis first'))).toBe(false);
    const operators = await tensors(join(stage.dir, 'operators.safetensors'));
    expect(analysis.selections).toHaveLength(4);
    for (const sel of analysis.selections) {
      for (const [site, chosen] of [['self_attn', sel.heads], ['mlp', sel.channels]] as const) {
        expect(Array.from(operators.get(`model.layers.${sel.layer}.${site}.apex.P`)!.i32!), `layer ${sel.layer} ${site} P`).toEqual(Array.from(chosen.P));
        expect(Array.from(operators.get(`model.layers.${sel.layer}.${site}.apex.N`)!.i32!), `layer ${sel.layer} ${site} N`).toEqual(Array.from(chosen.N));
      }
    }

    // A plain result object.
    expect(stage).toMatchObject({ stage: 1, dir: join(run, 'stages', '1'), method: 'apex', setting: 'operators', status: 'trained', steps: 2, startStep: 0, tokens: 2 * 2 * 32, modelDir: null, lora: null });
    expect(JSON.parse(JSON.stringify(stage))).toEqual(stage);
    expect(Number.isFinite(stage.finalLoss)).toBe(true);

    // Trainable counts: operators only, = the F32 elements of operators.safetensors; the model's
    // parameters = the elements of the base checkpoint; the record says the same.
    const t = stage.trainable;
    const operatorParams = [...operators.values()].filter((x) => x.dtype === 'F32').reduce((n, x) => n + x.elements, 0);
    const modelParams = [...(await tensors(join(MODEL, 'model.safetensors'))).values()].reduce((n, x) => n + x.elements, 0);
    expect(t).toEqual({ setting: 'operators', direct: 0, operators: operatorParams, adapters: 0, trainable: operatorParams, modelParams, fraction: operatorParams / modelParams });
    const record = JSON.parse(readFileSync(join(stage.dir, 'apex_run.json'), 'utf8')) as { details: { trainable: unknown } };
    expect(record.details.trainable).toEqual(t);

    // The run folder of APEX-METHOD §7 (operators setting: no trained.safetensors).
    for (const f of ['analysis/analysis.json', 'analysis/stats.safetensors', 'analysis/index.html', 'stages/1/operators.safetensors', 'stages/1/scores.safetensors', 'stages/1/metrics.jsonl', 'stages/1/checkpoints', 'stages/1/apex_run.json', 'stages/1/model/model.safetensors', 'stages/1/model/config.json']) {
      expect(existsSync(join(run, f)), f).toBe(true);
    }
    expect(existsSync(join(run, 'stages/1/trained.safetensors'))).toBe(false);

    // runExpand fused stage 1 into stages/1/model/, changing the operators' projections.
    expect(expanded).toMatchObject({ dryRun: false, output: join(run, 'stages', '1', 'model'), run, stage: 1 });
    expect(expanded.tensors.changed).toBeGreaterThan(0);

    // Independent truth: the fused checkpoint's held-out NLL, computed afresh by the streaming
    // forward pass, is the loss the trainer measured on the operator-augmented model.
    expect(stage.eval).not.toBeNull();
    expect(nll.tokens).toBe(4 * 31);
    expect(Math.abs(nll.meanNll - stage.eval!.loss) / stage.eval!.loss).toBeLessThan(1e-4);
    expect(nll.perplexity).toBeCloseTo(Math.exp(nll.meanNll), 6);
  }, 60_000);

  it('throws typed errors with a code and an exit status, and prints nothing', async () => {
    const missing = join(run, 'no-such-model');
    const tokenizer = await loadTokenizer(MODEL);
    const train = await loadSequences({ data: [DATA], tokenizer, seqLen: 32, seed: 0, samples: 2 });

    const analysis = runAnalysis({ model: missing, output: join(run, 'analysis-missing'), data: train, batchSize: 2, ratio: 0.375, seed: 0, backend: 'cpu' });
    await expect(analysis).rejects.toBeInstanceOf(InputError);
    await expect(analysis).rejects.toMatchObject({ code: 'NOT_FOUND', exit: 3 });
    expect(existsSync(join(run, 'analysis-missing'))).toBe(false);

    await expect(openModelForCompute(missing, { backend: 'cpu' })).rejects.toMatchObject({ name: 'InputError', code: 'NOT_FOUND', exit: 3 });
    await expect(runExpand({ run: join(run, 'no-such-run'), stage: 1 })).rejects.toMatchObject({ name: 'InputError', code: 'NOT_FOUND', exit: 3 });

    const badSetting = runStage({ model: MODEL, modelDir: MODEL, run: join(run, 'bad-setting'), stage: 1, method: 'apex', setting: 'everything' as never, train, steps: 1, backend: 'cpu' });
    await expect(badSetting).rejects.toBeInstanceOf(UsageError);
    await expect(badSetting).rejects.toMatchObject({ code: 'USAGE', exit: 2 });
    expect(existsSync(join(run, 'bad-setting'))).toBe(false);

    const backend = selectBackend('tpu' as never);
    await expect(backend).rejects.toBeInstanceOf(ApexError);
    await expect(backend).rejects.toMatchObject({ name: 'UsageError', code: 'USAGE', exit: 2 });
    expect(printed, 'the library printed').toEqual([]);
  });

  it("exports every name README's library example uses", () => {
    const readme = readFileSync('README.md', 'utf8');
    const section = /^## Using apex as a library\n([\s\S]*?)^## /m.exec(readme)?.[1];
    expect(section, 'README has a "Using apex as a library" section').toBeDefined();
    const code = /```ts\n([\s\S]*?)```/.exec(section!)?.[1] ?? '';
    const imported = /import \{([^}]*)\} from 'apex';/.exec(code)?.[1]?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
    expect(imported.length).toBeGreaterThan(0);
    for (const name of imported) expect(apex, `README imports ${name}`).toHaveProperty(name);
    // It calls the functions this test drives, in the same order.
    const called = EXAMPLE_FUNCTIONS.map((name) => code.indexOf(`${name}(`));
    expect(called.every((at) => at >= 0), `README calls ${EXAMPLE_FUNCTIONS.join(', ')}`).toBe(true);
    expect([...called].sort((a, b) => a - b)).toEqual(called);
    for (const name of EXAMPLE_FUNCTIONS) expect(imported).toContain(name);
    // The package's entry is this module.
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { main: string; types: string };
    expect(pkg).toMatchObject({ main: './dist/index.js', types: './dist/index.d.ts' });
  });
});
