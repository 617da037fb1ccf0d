// apex expand: failure paths leave no output (NaN/Inf → 6, disk full and memory limit → 5,
// Ctrl-C → 130, existing output → 2 and untouched), flag contradictions, dry run, run folders,
// dtype conversion and re-sharding.
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApexError, InterruptedError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { decodeToFloat32, encodeFromFloat32 } from '../../src/io/float-codec.js';
import { acquireOutputLock } from '../../src/io/output-lock.js';
import { runExpand, type ExpandOptions } from '../../src/pipeline/expand.js';
import { tempDir } from '../io/helpers.js';
import { bytesEqual, copyFixture, fixtureSpec, freshOperators, perturbOperators, tensorBytes, writeOperators, writeUpdates } from './expand-fixtures.js';

const BOTH = { heads: true, channels: true };

/** A fixture copy and random operators in a fresh folder. */
async function setup(fixture: 'stories260K' | 'llama-mha-f32' = 'stories260K', dtype: 'F32' | 'BF16' = 'F32') {
  const dir = await tempDir('apex-expand-fail-');
  const spec = await fixtureSpec(fixture);
  const ops = perturbOperators(freshOperators(spec, 9, Array.from({ length: spec.numLayers }, () => BOTH)), 10);
  const input = join(dir, 'in');
  await copyFixture(fixture, input, dtype);
  const operators = join(dir, 'ops.safetensors');
  await writeOperators(operators, ops, spec);
  return { dir, spec, ops, input, operators, output: join(dir, 'out') };
}

async function failure(options: ExpandOptions): Promise<ApexError> {
  try {
    await runExpand(options);
  } catch (e) {
    if (e instanceof ApexError) return e;
    throw e;
  }
  throw new Error('runExpand succeeded but was expected to fail');
}

/** Only the given names remain in the folder: no output, lock file or temporary folder. */
async function expectOnly(dir: string, names: string[]): Promise<void> {
  expect((await readdir(dir)).sort()).toEqual([...names].sort());
}

describe('numerical guards (exit 6, nothing written)', () => {
  it('NaN in an operator', async () => {
    const s = await setup();
    const bad = s.ops.map((o) => ({ ...o }));
    const a = Float32Array.from(bad[1]!.mlp!.a);
    a[2] = NaN;
    bad[1] = { ...bad[1]!, mlp: { ...bad[1]!.mlp!, a } };
    await writeOperators(s.operators, bad, s.spec);
    const e = await failure({ model: s.input, operators: s.operators, output: s.output });
    expect(e.exit).toBe(6);
    expect(e.message).toContain('model.layers.1.mlp.apex.a');
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('Inf created by fusion names the tensor', async () => {
    const s = await setup();
    const huge = s.ops.map((o) => (o.layer === 2 ? { ...o, mlp: { ...o.mlp!, B1: new Float32Array(o.mlp!.B1.length).fill(1e30), B2: new Float32Array(o.mlp!.B2.length).fill(1e30) } } : o));
    await writeOperators(s.operators, huge, s.spec);
    const e = await failure({ model: s.input, operators: s.operators, output: s.output });
    expect(e.exit).toBe(6);
    expect(e.message).toMatch(/model\.layers\.2\.mlp\.(gate_proj|up_proj|down_proj)\.weight/);
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('NaN in a trained update', async () => {
    const s = await setup();
    const values = new Float32Array(s.spec.hiddenSize).fill(1);
    values[7] = NaN;
    await writeUpdates(join(s.dir, 'trained.safetensors'), new Map([['model.norm.weight', { shape: [s.spec.hiddenSize], values }]]));
    const e = await failure({ model: s.input, operators: s.operators, updates: join(s.dir, 'trained.safetensors'), output: s.output });
    expect(e.exit).toBe(6);
    expect(e.message).toContain(`model.norm.weight in ${join(s.dir, 'trained.safetensors')}: 1 non-finite value (first at index 7: NaN)`);
    await expectOnly(s.dir, ['in', 'ops.safetensors', 'trained.safetensors']);
  });

  it('NaN in an input tensor the operators change (a copied one would pass through)', async () => {
    const s = await setup();
    const row = s.ops[0]!.mlp!.N[0]!;
    await copyFixture('stories260K', s.input, 'F32', new Map([['model.layers.0.mlp.up_proj.weight', new Map([[row * s.spec.hiddenSize + 2, 0x7fc00000]])]]));
    const e = await failure({ model: s.input, operators: s.operators, output: s.output });
    expect(e.exit).toBe(6);
    expect(e.message).toContain(`model.layers.0.mlp.up_proj.weight in ${join(s.input, 'model.safetensors')}: 1 non-finite value (first at index ${row * s.spec.hiddenSize + 2}: NaN)`);
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('a value beyond F16 range refuses --out-dtype F16', async () => {
    const s = await setup();
    const values = new Float32Array(s.spec.hiddenSize).fill(1);
    values[3] = 70000;
    await writeUpdates(join(s.dir, 'trained.safetensors'), new Map([['model.norm.weight', { shape: [s.spec.hiddenSize], values }]]));
    const e = await failure({ model: s.input, updates: join(s.dir, 'trained.safetensors'), output: s.output, outDtype: 'F16' });
    expect(e.exit).toBe(6);
    expect(e.message).toContain("'model.norm.weight': element 3 (70000) does not fit in F16");
  });
});

describe('resources and interruption leave no output', () => {
  it('disk full while writing → exit 5', async () => {
    const s = await setup();
    const e = await failure({
      model: s.input, operators: s.operators, output: s.output,
      beforeWrite: () => { throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }); },
    });
    expect(e.exit).toBe(5);
    expect(e.code).toBe('DISK_FULL');
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('an output locked by another live process → exit 2, nothing written', async () => {
    const s = await setup();
    const lock = await acquireOutputLock(s.output, { command: 'test' });
    try {
      const e = await failure({ model: s.input, operators: s.operators, output: s.output });
      expect(e.code).toBe('OUTPUT_LOCKED');
      expect(e.exit).toBe(2);
      expect(e.message).toContain(String(process.pid));
    } finally {
      await lock.release();
    }
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('--max-memory below the estimate → exit 5 before anything is written', async () => {
    const s = await setup();
    const e = await failure({ model: s.input, operators: s.operators, output: s.output, maxMemory: '10MB' });
    expect(e.exit).toBe(5);
    expect(e.message).toContain('--max-memory');
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
    await runExpand({ model: s.input, operators: s.operators, output: s.output, maxMemory: '8GiB' });
  });

  it('Ctrl-C while writing → exit 130', async () => {
    const s = await setup();
    const abort = new AbortController();
    const e = await failure({
      model: s.input, operators: s.operators, output: s.output, signal: abort.signal,
      progress: (m) => { if (m.startsWith('fusing layer 2')) abort.abort(new InterruptedError('interrupted by SIGINT')); },
    });
    expect(e.exit).toBe(130);
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });
});

describe('existing output, dry run', () => {
  it('an existing output is left alone without --force and replaced with it', async () => {
    const s = await setup();
    await mkdir(s.output);
    await writeFile(join(s.output, 'keep.txt'), 'mine');
    const e = await failure({ model: s.input, operators: s.operators, output: s.output });
    expect(e.exit).toBe(2);
    expect(e.code).toBe('OUTPUT_EXISTS');
    expect(await readdir(s.output)).toEqual(['keep.txt']);
    // A dry run answers as the real expand would: refused without --force, a plan with it.
    const dry = await failure({ model: s.input, operators: s.operators, output: s.output, dryRun: true });
    expect(dry.exit).toBe(2);
    expect(dry.code).toBe('OUTPUT_EXISTS');
    expect((await runExpand({ model: s.input, operators: s.operators, output: s.output, dryRun: true, force: true })).dryRun).toBe(true);
    expect(await readdir(s.output)).toEqual(['keep.txt']);
    await runExpand({ model: s.input, operators: s.operators, output: s.output, force: true });
    expect(await readdir(s.output)).not.toContain('keep.txt');
    expect(await readdir(s.output)).toContain('apex_run.json');
    await expectOnly(s.dir, ['in', 'ops.safetensors', 'out']);
  });

  it('--dry-run writes nothing and lists the changes per layer with the memory estimate', async () => {
    const s = await setup('llama-mha-f32');
    const r = await runExpand({ model: s.input, operators: s.operators, output: s.output, dryRun: true });
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
    expect(r.dryRun).toBe(true);
    expect(r.shards).toEqual([]);
    expect(r.layers).toHaveLength(s.spec.numLayers);
    expect(r.layers[0]!.changed).toEqual([
      { name: 'model.layers.0.self_attn.v_proj.weight', reasons: ['heads output-side'] },
      { name: 'model.layers.0.self_attn.o_proj.weight', reasons: ['heads input-side'] },
      { name: 'model.layers.0.mlp.gate_proj.weight', reasons: ['channels output-side'] },
      { name: 'model.layers.0.mlp.up_proj.weight', reasons: ['channels output-side'] },
      { name: 'model.layers.0.mlp.down_proj.weight', reasons: ['channels input-side'] },
    ]);
    // largest computed tensor: a 352×128 FFN matrix in float32 (the reused read buffer) plus
    // the Monarch product's float64 memory: both factors, input and output rows of k × 128
    const I = s.spec.intermediateSize;
    const mlp = s.ops[0]!.mlp!;
    const k = mlp.P.length;
    expect(r.memory.scratchBytes).toBe(I * 128 * 4);
    expect(r.memory.tensorBytes).toBe(I * 128 * 4 + 8 * (mlp.B1.length + mlp.B2.length + 2 * k * 128));
    expect(r.memory.totalBytes).toBe(r.memory.tensorBytes + r.memory.operatorBytes + r.memory.ioBytes + r.memory.runtimeBytes);
  });
});

describe('flags', () => {
  it('contradictory or incomplete flag sets are usage errors naming the flags', async () => {
    const s = await setup();
    const cases: [ExpandOptions, RegExp][] = [
      [{ run: s.dir, stage: 1, model: s.input, output: s.output }, /--run .*cannot be combined with <model>$/],
      [{ run: s.dir, stage: 1, operators: s.operators }, /cannot be combined with --operators/],
      [{ model: s.input, operators: s.operators, output: s.output, stage: 1 }, /--stage needs --run/],
      [{ run: s.dir }, /--run needs --stage/],
      [{}, /give <model> --operators/],
      [{ model: s.input, output: s.output }, /--operators .*--updates/],
      [{ model: s.input, operators: s.operators }, /-o\/--output .* is required/],
      [{ model: s.input, operators: s.operators, output: s.input }, /input model's own folder/],
      [{ model: s.input, operators: s.operators, output: s.output, maxShardSize: 'big' }, /--max-shard-size/],
    ];
    for (const [options, message] of cases) {
      const e = await failure(options);
      expect(e.exit, message.source).toBe(2);
      expect(e.message).toMatch(message);
    }
    await expectOnly(s.dir, ['in', 'ops.safetensors']);
  });

  it('an update that does not fit the model is an input error (exit 3)', async () => {
    const s = await setup();
    await writeUpdates(join(s.dir, 't.safetensors'), new Map([['model.norm.weight', { shape: [3], values: new Float32Array(3) }]]));
    const e = await failure({ model: s.input, updates: join(s.dir, 't.safetensors'), output: s.output });
    expect(e.exit).toBe(3);
    expect(e.message).toContain("'model.norm.weight' has shape [3]");
  });
});

describe('run folders (§7)', () => {
  it('stage 1 from the recorded base model, stage 2 from stage 1\'s output with trained tensors only', async () => {
    const s = await setup();
    const run = join(s.dir, 'run');
    await mkdir(join(run, 'stages', '1'), { recursive: true });
    await mkdir(join(run, 'stages', '2'), { recursive: true });
    // The record apex finetune writes last marks each stage complete (only the fields expand reads).
    await writeFile(join(run, 'stages', '1', 'apex_run.json'), JSON.stringify({ command: 'finetune', base_model: s.input }));
    await writeOperators(join(run, 'stages', '1', 'operators.safetensors'), s.ops, s.spec, 1);
    const values = new Float32Array(s.spec.hiddenSize).fill(0.5);
    await writeUpdates(join(run, 'stages', '2', 'trained.safetensors'), new Map([['model.norm.weight', { shape: [s.spec.hiddenSize], values }]]));

    // stage 2 has trained tensors but no record: an interrupted stage, not fused
    const unfinished = await failure({ run, stage: 2 });
    expect(unfinished.exit).toBe(3);
    expect(unfinished.code).toBe('NOT_A_RUN');
    expect(unfinished.message).toContain(join(run, 'stages', '2', 'apex_run.json'));
    expect(unfinished.message).toContain(`${run} holds no finished stage 2`);
    await writeFile(join(run, 'stages', '2', 'apex_run.json'), JSON.stringify({ command: 'expand' }));
    const foreign = await failure({ run, stage: 2 });
    expect(foreign.code).toBe('NOT_A_RUN');
    expect(foreign.message).toContain('not a stage record of apex finetune');
    await writeFile(join(run, 'stages', '2', 'apex_run.json'), JSON.stringify({ command: 'finetune' }));

    const e = await failure({ run, stage: 2 });
    expect(e.exit).toBe(3);
    expect(e.message).toContain('--stage 1');

    const r1 = await runExpand({ run, stage: 1 });
    expect(r1.output).toBe(join(run, 'stages', '1', 'model'));
    expect(r1.model.dir).toBe(s.input);
    const r2 = await runExpand({ run, stage: 2 });
    expect(r2.model.dir).toBe(join(run, 'stages', '1', 'model'));
    expect(r2.tensors.changed).toBe(1);
    const out2 = await tensorBytes(r2.output);
    expect(new Float32Array(out2.get('model.norm.weight')!.bytes.slice().buffer)).toEqual(values);
    const out1 = await tensorBytes(r1.output);
    for (const [name, t] of out1) if (name !== 'model.norm.weight') expect(bytesEqual(out2.get(name)!.bytes, t.bytes), name).toBe(true);
    const record = JSON.parse(await readFile(join(r2.output, 'apex_run.json'), 'utf8'));
    expect(record.base_model).toBe(s.input);
    expect(await readFile(join(r2.output, 'README.md'), 'utf8')).toContain(`| base model | \`${s.input}\` |`);

    const again = await failure({ run, stage: 1 });
    expect(again.code).toBe('OUTPUT_EXISTS');

    // -o: the same stage model written elsewhere (here as BF16), the run left as it is; the model
    // card's command names the output. Not inside the stage folder, whose inputs it would replace.
    const before = await tensorBytes(r2.output);
    const exported = await runExpand({ run, stage: 2, output: join(s.dir, 'export'), outDtype: 'BF16' });
    expect(exported.output).toBe(join(s.dir, 'export'));
    const bf16 = await tensorBytes(exported.output);
    for (const [name, t] of before) {
      expect(bf16.get(name)!.dtype, name).toBe('BF16');
      const f32 = new Float32Array(t.bytes.slice().buffer);
      const back = new Float32Array(Uint32Array.from(new Uint16Array(bf16.get(name)!.bytes.slice().buffer), (h) => h << 16).buffer);
      for (let i = 0; i < f32.length; i++) expect(Math.abs(back[i]! - f32[i]!), name).toBeLessThanOrEqual(Math.abs(f32[i]!) * 2 ** -8);
    }
    expect(await tensorBytes(r2.output)).toEqual(before);
    expect(await readFile(join(exported.output, 'README.md'), 'utf8')).toContain(`--run ${run} --stage 2 -o ${join(s.dir, 'export')}`);
    const inside = await failure({ run, stage: 2, output: join(run, 'stages', '2') });
    expect(inside.exit).toBe(2);
    expect(inside.message).toMatch(/the trained tensors/);
  });

  it('a folder that is not an apex run is refused (exit 3) naming the missing record and the run folder; nothing is written', async () => {
    const s = await setup();
    const run = join(s.dir, 'not-a-run');
    await mkdir(join(run, 'stages', '1'), { recursive: true });
    await writeOperators(join(run, 'stages', '1', 'operators.safetensors'), s.ops, s.spec, 1);
    await writeFile(join(run, 'analysis.json'), JSON.stringify({ model: { path: s.input } }));
    const e = await failure({ run, stage: 1 });
    expect(e.exit).toBe(3);
    expect(e.message).toContain(join(run, 'stages', '1', 'apex_run.json'));
    expect(e.message).toContain(run);
    expect((await readdir(join(run, 'stages', '1'))).sort()).toEqual(['operators.safetensors']);
  });

  it('stage n > 1 is not fused from a previous model without its record (an incomplete copy)', async () => {
    const s = await setup();
    const run = join(s.dir, 'run');
    await mkdir(join(run, 'stages', '2'), { recursive: true });
    await writeFile(join(run, 'stages', '2', 'apex_run.json'), JSON.stringify({ command: 'finetune' }));
    await writeOperators(join(run, 'stages', '2', 'operators.safetensors'), s.ops, s.spec, 2);
    await copyFixture('stories260K', join(run, 'stages', '1', 'model'), 'F32');
    const e = await failure({ run, stage: 2 });
    expect(e.exit).toBe(3);
    expect(e.code).toBe('INCOMPLETE_MODEL');
    expect(e.message).toContain(`${join(run, 'stages', '1', 'model')} has no apex_run.json`);
    expect(await readdir(join(run, 'stages', '2'))).not.toContain('model');
  });
});

describe('--out-dtype and --max-shard-size', () => {
  it('float32 → BF16 in new shards: every value rounded once, config dtype updated, tokenizer copied', async () => {
    const s = await setup('llama-mha-f32', 'F32');
    const r = await runExpand({ model: s.input, operators: s.operators, output: s.output, outDtype: 'BF16', maxShardSize: '300kB' });
    expect(r.layout).toBe('plan');
    const ck = await Checkpoint.open(s.output);
    try {
      expect(ck.shardFiles.length).toBeGreaterThan(2);
      expect(ck.index).toBeDefined();
      for (const t of ck.tensors()) expect(t.dtype).toBe('BF16');
    } finally {
      await ck.close();
    }
    const inText = await readFile(join(s.input, 'config.json'), 'utf8');
    const outText = await readFile(join(s.output, 'config.json'), 'utf8');
    expect(outText).toBe(inText.replace('"dtype": "float32"', '"dtype": "bfloat16"'));
    expect(bytesEqual(await readFile(join(s.output, 'tokenizer.json')), await readFile(join(s.input, 'tokenizer.json')))).toBe(true);
    const before = await tensorBytes(s.input);
    const after = await tensorBytes(s.output);
    const q = 'model.layers.0.self_attn.q_proj.weight'; // cast only
    expect(bytesEqual(after.get(q)!.bytes, encodeFromFloat32(decodeToFloat32(before.get(q)!.bytes, 'F32', q), 'BF16'))).toBe(true);
  });
});
