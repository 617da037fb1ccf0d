/** Reading a sharded checkpoint cross-checks the index against every shard header. */
import { cp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { Checkpoint, INDEX_FILE } from '../../src/io/checkpoint.js';
import { copyAllTensors, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { inspectCheckpoint } from '../../src/io/inspect.js';
import { writeSafetensors } from '../../src/io/safetensors-writer.js';
import { tempDir } from './helpers.js';

const dir = await tempDir('apex-index-');
const sharded = join(dir, 'sharded');
let n = 0;

beforeAll(async () => {
  const ck = await Checkpoint.open('fixtures/llama-mha-f32');
  await writeCheckpoint({ outDir: sharded, input: ck, tensors: copyAllTensors(ck), layout: { kind: 'plan', maxShardBytes: 1_200_000 }, hash: false });
  await ck.close();
});

/** A fresh copy of the sharded checkpoint, changed by `mutate`. */
async function variant(mutate: (d: string, index: { weight_map: Record<string, string> }) => Promise<unknown>): Promise<string> {
  const d = join(dir, `v${n++}`);
  await cp(sharded, d, { recursive: true });
  const index = JSON.parse(await readFile(join(d, INDEX_FILE), 'utf8'));
  const again = await mutate(d, index);
  if (again !== false) await writeFile(join(d, INDEX_FILE), JSON.stringify(index));
  return d;
}

async function openError(d: string): Promise<InputError> {
  const err = await Checkpoint.open(d).then((c) => c.close().then(() => undefined), (e: unknown) => e);
  expect(err).toBeInstanceOf(InputError);
  expect((err as InputError).exit).toBe(3);
  return err as InputError;
}


/** apex inspect keeps its report for the same checkpoint: the shard-index check fails, naming the problem. */
async function inspectFails(d: string, problem: string): Promise<void> {
  const report = await inspectCheckpoint(d);
  expect(report.validation.ok).toBe(false);
  expect(report.validation.checks.find((c) => c.check === 'shard index')).toMatchObject({ ok: false, detail: expect.stringContaining(problem) });
}

describe('sharded checkpoint index cross-checks', () => {
  it('the unmodified sharded checkpoint opens', async () => {
    const ck = await Checkpoint.open(sharded);
    expect(ck.shardFiles.length).toBeGreaterThan(1);
    expect(ck.tensors().length).toBe(39);
    await ck.close();
  });

  it('a mapped tensor that its shard does not hold', async () => {
    const d = await variant(async (_d, index) => { index.weight_map['model.layers.9.mlp.up_proj.weight'] = index.weight_map['model.norm.weight']!; });
    const e = await openError(d);
    expect(e.code).toBe('INDEX_MISMATCH');
    expect(e.message).toContain("'model.layers.9.mlp.up_proj.weight'");
    await inspectFails(d, e.message);
  });

  it('a tensor stored in two shards', async () => {
    const d = await variant(async (dd, index) => {
      const files = [...new Set(Object.values(index.weight_map))].sort();
      const moved = Object.keys(index.weight_map).find((k) => index.weight_map[k] === files[0])!;
      // rewrite the last shard with one extra tensor that also lives in the first shard
      const ck = await Checkpoint.open(dd);
      const last = files[files.length - 1]!;
      const keep = ck.tensors().filter((t) => t.file === last);
      const data = await Promise.all(keep.map((t) => ck.readBytes(t.name)));
      const extra = await ck.readBytes(moved);
      const info = ck.info(moved);
      await ck.close();
      await writeSafetensors(join(dd, last), [...keep.map((t, i) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: data[i]! })), { name: moved, dtype: info.dtype, shape: info.shape, data: extra }]);
      return false;
    });
    const e = await openError(d);
    expect(e.code).toBe('INDEX_MISMATCH');
    expect(e.message).toMatch(/appears in both|maps '.*' to/);
    await inspectFails(d, e.message);
  });

  it('safetensors files the index does not list are left unread and reported, as transformers does', async () => {
    // Mistral repositories ship consolidated.safetensors (every weight under other names) next
    // to the shards and index; a leftover file of an earlier layout is the same case.
    const d = await variant(async (dd) => {
      const ck = await Checkpoint.open(dd);
      const t = ck.tensors()[0]!;
      const bytes = await ck.readBytes(t.name);
      await ck.close();
      await writeSafetensors(join(dd, 'consolidated.safetensors'), [{ name: 'layers.0.attention.wq.weight', dtype: t.dtype, shape: t.shape, data: bytes }]);
      await writeFile(join(dd, 'model-00009-of-00009.safetensors'), 'not even a safetensors file');
      return false;
    });
    const ck = await Checkpoint.open(d);
    expect(ck.unlistedFiles).toEqual(['consolidated.safetensors', 'model-00009-of-00009.safetensors']);
    expect(ck.tensors().length).toBe(39);
    expect(ck.tensors().some((t) => t.file === 'consolidated.safetensors')).toBe(false);
    await ck.close();
    const report = await inspectCheckpoint(d);
    expect(report.validation.ok).toBe(true);
    expect(report.validation.warnings.join('\n')).toContain(`consolidated.safetensors, model-00009-of-00009.safetensors in the folder but not in ${INDEX_FILE}`);
  });

  it('model.safetensors beside an index is the checkpoint (transformers looks for it first); the index and its shards are not read', async () => {
    // Here model.safetensors holds other weights than the shards (one tensor scaled), as a repo
    // that ships, say, a converted single file next to its original shards may.
    const d = await variant(async (dd) => {
      const src = await Checkpoint.open('fixtures/llama-mha-f32');
      const tensors = [];
      for (const t of src.tensors()) {
        const bytes = await src.readBytes(t.name);
        if (t.name === 'model.norm.weight') new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).forEach((v, i, a) => { a[i] = 2 * v; });
        tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: bytes });
      }
      await src.close();
      await writeSafetensors(join(dd, 'model.safetensors'), tensors);
      return false;
    });
    const ck = await Checkpoint.open(d);
    expect(ck.shardFiles).toEqual(['model.safetensors']);
    expect(ck.index).toBeUndefined();
    expect(ck.ignoredIndex).toBe(true);
    expect(ck.unlistedFiles.length).toBeGreaterThan(1);
    expect(ck.unlistedFiles.every((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f))).toBe(true);
    const norm = await ck.readBytes('model.norm.weight');
    const original = await Checkpoint.open('fixtures/llama-mha-f32');
    const before = await original.readBytes('model.norm.weight');
    await original.close();
    expect(new Float32Array(norm.slice().buffer)[0]).toBe(2 * new Float32Array(before.slice().buffer)[0]!);
    await ck.close();
    const report = await inspectCheckpoint(d);
    expect(report.validation.ok).toBe(true);
    expect(report.validation.warnings.join('\n')).toContain(`model.safetensors and ${INDEX_FILE} are both in the folder: model.safetensors is the checkpoint, as transformers loads it`);
  });

  it('a listed shard that is missing', async () => {
    const d = await variant(async (dd, index) => {
      const f = Object.values(index.weight_map)[0]!;
      await rename(join(dd, f), join(dd, `${f}.gone`));
      return false;
    });
    const e = await openError(d);
    expect(e.code).toBe('INDEX_MISMATCH');
    expect(e.message).toMatch(/does not exist/);
    await inspectFails(d, e.message);
  });

  it('a tensor in a shard that the index does not map', async () => {
    const d = await variant(async (_d, index) => { delete index.weight_map['model.norm.weight']; });
    const e = await openError(d);
    expect(e.code).toBe('INDEX_MISMATCH');
    expect(e.message).toContain("'model.norm.weight'");
    await inspectFails(d, e.message);
  });

  it.each([
    ['not JSON', '{"weight_map": '],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
    ['weight_map missing', '{"metadata":{}}'],
    ['empty weight_map', '{"weight_map":{}}'],
    ['shard path escaping the folder', '{"weight_map":{"a":"../x.safetensors"}}'],
    ['duplicate key in weight_map', '{"weight_map":{"a":"model-00001-of-00002.safetensors","a":"model-00002-of-00002.safetensors"}}'],
    ['metadata not an object', '{"metadata":3,"weight_map":{"a":"model-00001-of-00002.safetensors"}}'],
  ])('a malformed index: %s', async (_name, content) => {
    const d = await variant(async (dd) => { await writeFile(join(dd, INDEX_FILE), content); return false; });
    const e = await openError(d);
    expect(e.code).toBe('BAD_INDEX');
  });

  it('a folder with only other weight formats names them', async () => {
    const d = join(dir, 'binonly');
    await cp('fixtures/llama-mha-f32', d, { recursive: true });
    await rm(join(d, 'model.safetensors'));
    await writeFile(join(d, 'pytorch_model.bin'), 'x');
    const e = await openError(d);
    expect(e.code).toBe('NO_WEIGHTS');
    expect(e.message).toContain('pytorch_model.bin');
  });
});
