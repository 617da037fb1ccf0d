// apex expand, library level: identity (bit for bit), bf16 fusion = one RNE rounding of the
// float32 fusion, trained updates before fusion, model files, card and provenance.
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeToFloat32, encodeFromFloat32, f32BitsToBf16 } from '../../src/io/float-codec.js';
import { layerTensors } from '../../src/model/architecture.js';
import { fuseLayerTensor } from '../../src/ops/fusion.js';
import { runExpand } from '../../src/pipeline/expand.js';
import { tempDir } from '../io/helpers.js';
import { bytesEqual, copyFixture, fixtureSpec, freshOperators, perturbOperators, tensorBytes, writeOperators, writeUpdates } from './expand-fixtures.js';

const everyLayer = (n: number) => Array.from({ length: n }, () => ({ heads: true, channels: true }));

describe('identity operators', () => {
  for (const [fixture, dtype] of [['llama-mha-f32', 'F32'], ['stories260K', 'BF16']] as const) {
    it(`${fixture} stored as ${dtype}: every tensor keeps its bytes, signed zeros and NaN payloads included`, async () => {
      const dir = await tempDir('apex-expand-');
      const spec = await fixtureSpec(fixture);
      const ops = freshOperators(spec, 11, everyLayer(spec.numLayers));
      const l0 = ops[0]!;
      const hidden = spec.hiddenSize;
      const dh = spec.headDim;
      const qCols = spec.numHeads * dh;
      // Planted in rows/columns the operators select: −0.0 and NaN payloads (quiet and signalling).
      const negZero = dtype === 'BF16' ? 0x8000 : 0x80000000;
      const nanA = dtype === 'BF16' ? 0x7f81 : 0x7fa00001;
      const nanB = dtype === 'BF16' ? 0xffc3 : 0xffc00abc;
      const plant = new Map<string, Map<number, number>>([
        ['model.layers.0.self_attn.v_proj.weight', new Map([[l0.attn!.N[0]! * dh * hidden, negZero], [l0.attn!.P[0]! * dh * hidden + 1, nanA]])],
        ['model.layers.0.self_attn.o_proj.weight', new Map([[l0.attn!.N[0]! * dh, nanB], [qCols + l0.attn!.P[0]! * dh, negZero]])],
        ['model.layers.0.mlp.gate_proj.weight', new Map([[l0.mlp!.N[0]! * hidden, nanA], [l0.mlp!.P[0]! * hidden, negZero]])],
        ['model.layers.0.mlp.down_proj.weight', new Map([[l0.mlp!.N[0]!, negZero], [spec.intermediateSize + l0.mlp!.N[0]!, nanB]])],
      ]);
      const input = join(dir, 'in');
      await copyFixture(fixture, input, dtype, plant);
      await writeOperators(join(dir, 'operators.safetensors'), ops, spec);
      const out = join(dir, 'out');

      const result = await runExpand({ model: input, operators: join(dir, 'operators.safetensors'), output: out, argv: ['in', '--operators', 'operators.safetensors', '-o', 'out'] });

      expect(result.tensors.changed).toBe(0);
      const before = await tensorBytes(input);
      const after = await tensorBytes(out);
      expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
      for (const [name, t] of before) {
        const o = after.get(name)!;
        expect(o.dtype).toBe(t.dtype);
        expect(o.shape).toEqual(t.shape);
        expect(bytesEqual(o.bytes, t.bytes), name).toBe(true);
      }
      // the planted patterns really are in the output (not normalised on the way)
      const v = after.get('model.layers.0.self_attn.v_proj.weight')!.bytes;
      const bits = dtype === 'BF16' ? new Uint16Array(v.buffer, v.byteOffset, v.byteLength / 2) : new Uint32Array(v.buffer, v.byteOffset, v.byteLength / 4);
      expect(bits[l0.attn!.N[0]! * dh * hidden]).toBe(negZero);
      expect(bits[l0.attn!.P[0]! * dh * hidden + 1]).toBe(nanA);

      const files = await readdir(out);
      for (const f of await readdir(input)) {
        if (f.endsWith('.json') && f !== 'model.safetensors.index.json') expect(bytesEqual(await readFile(join(out, f)), await readFile(join(input, f))), f).toBe(true);
      }
      expect(files).toContain('README.md');
      const run = JSON.parse(await readFile(join(out, 'apex_run.json'), 'utf8'));
      expect(run.command).toBe('expand');
      expect(run.argv).toEqual(['in', '--operators', 'operators.safetensors', '-o', 'out']);
      expect(run.seed).toBe(7);
      const shard = run.outputs.model.files[0];
      expect(shard.file).toBe('model.safetensors');
      expect(shard.sha256).toBe(createHash('sha256').update(await readFile(join(out, 'model.safetensors'))).digest('hex'));
      expect(run.inputs.model.files[0].sha256).toBe(createHash('sha256').update(await readFile(join(input, 'model.safetensors'))).digest('hex'));
      // The record covers the whole checkpoint: the config and tokenizer files beside the weights too.
      for (const f of run.outputs.model.files.slice(1) as { file: string; sha256: string }[]) {
        expect(f.file.endsWith('.safetensors'), f.file).toBe(false);
        expect(f.sha256, f.file).toBe(createHash('sha256').update(await readFile(join(out, f.file))).digest('hex'));
      }
      expect(run.outputs.model.files.map((f: { file: string }) => f.file)).toContain('config.json');
      expect(run.peak_rss_bytes).toBeGreaterThan(0);
    });
  }
});

describe('bf16 checkpoint, random operators', () => {
  it('each fused tensor is the RNE rounding of the float32 fusion of the decoded input; the rest is copied', async () => {
    const dir = await tempDir('apex-expand-');
    const spec = await fixtureSpec('stories260K'); // GQA: 8 query heads, 4 KV groups
    const plan = [
      { heads: true, channels: true },
      { heads: true, channels: false },
      { heads: false, channels: false },
      { heads: false, channels: true },
      { heads: true, channels: true },
    ];
    const ops = perturbOperators(freshOperators(spec, 5, plan), 6);
    const input = join(dir, 'in');
    await copyFixture('stories260K', input, 'BF16');
    await writeOperators(join(dir, 'ops.safetensors'), ops, spec);
    const out = join(dir, 'out');
    const result = await runExpand({ model: input, operators: join(dir, 'ops.safetensors'), output: out });

    const before = await tensorBytes(input);
    const after = await tensorBytes(out);
    const opsOf = new Map(ops.map((o) => [o.layer, o]));
    const fusedNames = new Set<string>();
    for (let l = 0; l < spec.numLayers; l++) {
      const lo = opsOf.get(l);
      for (const t of layerTensors(spec, l)) {
        const applies = lo && ((['v_proj', 'o_proj'].includes(t.role) && lo.attn) || (['gate_proj', 'up_proj', 'down_proj'].includes(t.role) && lo.mlp));
        if (!applies) continue;
        fusedNames.add(t.name);
        const values = Float32Array.from(decodeToFloat32(before.get(t.name)!.bytes, 'BF16', t.name));
        fuseLayerTensor(t, values, lo, spec);
        const want = encodeFromFloat32(values, 'BF16');
        expect(bytesEqual(after.get(t.name)!.bytes, want), t.name).toBe(true);
        expect(bytesEqual(after.get(t.name)!.bytes, before.get(t.name)!.bytes), `${t.name} changed`).toBe(false);
      }
    }
    expect(fusedNames.size).toBe(2 + 2 + 3 + 3 + 5); // layers 0, 1, 3, 4 as planned, layer 2 untouched
    expect(result.tensors.changed).toBe(fusedNames.size);
    for (const [name, t] of before) if (!fusedNames.has(name)) expect(bytesEqual(after.get(name)!.bytes, t.bytes), name).toBe(true);
    expect(result.layers.find((l) => l.layer === 2)).toBeUndefined();
    expect(result.layers.find((l) => l.layer === 1)!.changed.map((c) => c.name)).toEqual(['model.layers.1.self_attn.v_proj.weight', 'model.layers.1.self_attn.o_proj.weight']);
  });
});

describe('--updates', () => {
  it('refuses an operator file holding NaN/Inf, naming the tensor, how many values and the first index', async () => {
    const dir = await tempDir('apex-expand-');
    const spec = await fixtureSpec('stories260K');
    const [first, ...rest] = freshOperators(spec, 1, [{ heads: true, channels: true }]);
    const bUp = Float32Array.from(first!.mlp!.bUp);
    bUp[3] = Number.NaN;
    bUp[5] = Number.POSITIVE_INFINITY;
    const ops = join(dir, 'nan-ops.safetensors');
    await writeOperators(ops, [{ ...first!, mlp: { ...first!.mlp!, bUp } }, ...rest], spec);
    const out = join(dir, 'out');
    await expect(runExpand({ model: 'fixtures/stories260K', operators: ops, output: out })).rejects.toMatchObject({
      code: 'NON_FINITE',
      message: `${ops}: operator tensor 'model.layers.0.mlp.apex.b_up' holds NaN or Inf: 2 non-finite values (first at index 3: NaN); refusing to fuse it, nothing was written`,
    });
    expect((await readdir(dir)).filter((f) => f.startsWith('out'))).toEqual([]);
  });

  it('warns when operators of a structured or full stage are fused without their trained weights', async () => {
    const dir = await tempDir('apex-expand-');
    const spec = await fixtureSpec('stories260K');
    const ops = perturbOperators(freshOperators(spec, 3, [{ heads: true, channels: true }]), 5);
    const warned = async (setting: 'operators' | 'structured' | 'full', updates?: string) => {
      await writeOperators(join(dir, `${setting}.safetensors`), ops, spec, 1, setting);
      const r = await runExpand({ model: 'fixtures/stories260K', operators: join(dir, `${setting}.safetensors`), ...(updates ? { updates } : {}), output: join(dir, `out-${setting}-${updates ? 'u' : 'n'}`) });
      return r.warnings.filter((w) => /which also trains weights directly, but no --updates was given/.test(w)).length;
    };
    expect(await warned('structured')).toBe(1);
    expect(await warned('full')).toBe(1);
    expect(await warned('operators')).toBe(0);
    await writeUpdates(join(dir, 'trained.safetensors'), new Map([['model.norm.weight', { shape: [spec.hiddenSize], values: new Float32Array(spec.hiddenSize).fill(1) }]]));
    expect(await warned('full', join(dir, 'trained.safetensors'))).toBe(0);
  });

  it('replaces a tensor with its trained F32 copy before fusion, rounding to bf16 once', async () => {
    const dir = await tempDir('apex-expand-');
    const spec = await fixtureSpec('stories260K');
    const input = join(dir, 'in');
    await copyFixture('stories260K', input, 'BF16');
    // Operator of layer 0 with M = 0, a = 1 and one b_v entry of 1.5: row r of v_proj is scaled.
    const [fresh] = freshOperators(spec, 3, [{ heads: true, channels: false }]);
    const bV = new Float32Array(fresh!.attn!.bV.length).fill(1);
    bV[0] = 1.5;
    const ops = [{ layer: 0, attn: { ...fresh!.attn!, B1: new Float32Array(fresh!.attn!.B1.length), bV } }];
    await writeOperators(join(dir, 'ops.safetensors'), ops, spec);
    const row = fresh!.attn!.P[0]! * spec.headDim; // v_proj row of b_v[0]
    const col = 3;
    // A value whose bf16 rounding before the scale would give a different result: rounding once matters.
    let x = 0.3;
    const bf = (v: number) => f32BitsToBf16(new Uint32Array(Float32Array.of(v).buffer)[0]!);
    const fromBf = (h: number) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]!;
    while (bf(Math.fround(1.5 * x)) === bf(Math.fround(1.5 * fromBf(bf(x))))) x = Math.fround(x + 1e-4);
    const v = await tensorBytes(input);
    const vValues = Float32Array.from(decodeToFloat32(v.get('model.layers.0.self_attn.v_proj.weight')!.bytes, 'BF16', 'v'));
    vValues[row * spec.hiddenSize + col] = x;
    const qValues = Float32Array.from(decodeToFloat32(v.get('model.layers.1.self_attn.q_proj.weight')!.bytes, 'BF16', 'q'));
    qValues[5] = 0.123456789;
    await writeUpdates(join(dir, 'trained.safetensors'), new Map([
      ['model.layers.0.self_attn.v_proj.weight', { shape: [spec.numKvHeads * spec.headDim, spec.hiddenSize], values: vValues }],
      ['model.layers.1.self_attn.q_proj.weight', { shape: [spec.numHeads * spec.headDim, spec.hiddenSize], values: qValues }],
    ]));
    const out = join(dir, 'out');
    const result = await runExpand({ model: input, operators: join(dir, 'ops.safetensors'), updates: join(dir, 'trained.safetensors'), output: out });
    expect(result.tensors.changed).toBe(2);
    const after = await tensorBytes(out);
    const vOut = new Uint16Array(after.get('model.layers.0.self_attn.v_proj.weight')!.bytes.slice().buffer);
    expect(vOut[row * spec.hiddenSize + col]).toBe(bf(Math.fround(1.5 * x)));
    expect(vOut[row * spec.hiddenSize + col]).not.toBe(bf(Math.fround(1.5 * fromBf(bf(x)))));
    const qOut = new Uint16Array(after.get('model.layers.1.self_attn.q_proj.weight')!.bytes.slice().buffer);
    const qIn = new Uint16Array(v.get('model.layers.1.self_attn.q_proj.weight')!.bytes.slice().buffer);
    expect(qOut[5]).toBe(bf(0.123456789));
    qOut[5] = qIn[5]!;
    expect(bytesEqual(new Uint8Array(qOut.buffer), new Uint8Array(qIn.buffer))).toBe(true);
  });
});
