import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ApexError, ResourceLimitError, UsageError, VerificationError } from '../../src/errors.js';
import { parseByteSize } from '../../src/io/byte-size.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { copyAllTensors, floatTensor, verifyWrittenCheckpoint, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { encodeFromFloat32 } from '../../src/io/float-codec.js';
import { lockPathFor } from '../../src/io/output-lock.js';
import { canMountTmpfs, pseudoRandomBytes, sameBytes, tempDir } from './helpers.js';

const FIXTURE = 'fixtures/llama-mha-f32';
const dir = await tempDir('apex-ckw-');

/** Fixture copy with files a rewrite must carry (chat template) and must not (other formats). */
const input = join(dir, 'input');
await cp(FIXTURE, input, { recursive: true });
await writeFile(join(input, 'chat_template.jinja'), '{{ messages }}');
await writeFile(join(input, 'pytorch_model.bin'), 'not copied');
await writeFile(join(input, 'model.gguf'), 'not copied');
await mkdir(join(input, 'original'));
await writeFile(join(input, 'original', 'consolidated.00.pth'), 'not copied');

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The fixture in BF16, re-planned into shards of at most 400 kB. */
async function writeShardedBf16(out: string): Promise<void> {
  const ck = await Checkpoint.open(input);
  try {
    await writeCheckpoint({
      outDir: out,
      input: ck,
      tensors: ck.tensors().map((t) => floatTensor(t.name, 'BF16', t.shape, () => ck.readFloat32(t.name))),
      layout: { kind: 'plan', maxShardBytes: parseByteSize('400kB') },
    });
  } finally {
    await ck.close();
  }
}

describe('writeCheckpoint', () => {
  it('copy-through of a single-file checkpoint: same tensors byte for byte, model files copied, other formats not', async () => {
    const out = join(dir, 'copy-single');
    const ck = await Checkpoint.open(input);
    const written = await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck) });
    expect(written.shardFiles).toEqual(['model.safetensors']);
    expect(written.indexed).toBe(false);
    expect((await readdir(out)).sort()).toEqual(['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    for (const f of ['config.json', 'tokenizer.json', 'chat_template.jinja', 'generation_config.json']) {
      expect(sameBytes(await readFile(join(out, f)), await readFile(join(input, f)))).toBe(true);
    }
    const back = await Checkpoint.open(out);
    expect(back.tensorNames().sort()).toEqual(ck.tensorNames().sort());
    for (const rec of written.tensors) {
      const src = await ck.readBytes(rec.name);
      expect(sameBytes(await back.readBytes(rec.name), src)).toBe(true);
      expect(rec.sha256).toBe(sha256(src));
    }
    await back.close();
    await ck.close();
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-') || f.endsWith('.lock'))).toEqual([]);
  });

  it('writes a sharded BF16 checkpoint: shard names, sorted index with total_size, values rounded once (RNE)', async () => {
    const out = join(dir, 'sharded-bf16');
    await writeShardedBf16(out);
    const files = (await readdir(out)).filter((f) => f.endsWith('.safetensors')).sort();
    expect(files.length).toBeGreaterThan(2);
    files.forEach((f, i) => expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(files.length).padStart(5, '0')}.safetensors`));
    const index = JSON.parse(await readFile(join(out, 'model.safetensors.index.json'), 'utf8'));
    const keys = Object.keys(index.weight_map);
    expect(keys).toEqual([...keys].sort());
    const ck = await Checkpoint.open(out);
    const src = await Checkpoint.open(input);
    let total = 0;
    for (const t of ck.tensors()) {
      total += t.end - t.begin;
      expect(t.dtype).toBe('BF16');
      expect(index.weight_map[t.name]).toBe(t.file);
      const expected = encodeFromFloat32(await src.readFloat32(t.name), 'BF16');
      expect(sameBytes(await ck.readBytes(t.name), expected)).toBe(true);
    }
    expect(index.metadata.total_size).toBe(total);
    for (const f of files) {
      const inFile = ck.tensors().filter((t) => t.file === f).reduce((s, t) => s + t.end - t.begin, 0);
      const largest = Math.max(...ck.tensors().filter((t) => t.file === f).map((t) => t.end - t.begin));
      expect(inFile <= 400_000 || inFile === largest).toBe(true);
    }
    await ck.close();
    await src.close();
  });

  it.each([true, false])('keeping the layout of a sharded checkpoint reproduces every file byte for byte (kernel copy %s)', async (kernelCopy) => {
    const a = join(dir, `keep-a-${kernelCopy}`);
    const b = join(dir, `keep-b-${kernelCopy}`);
    await writeShardedBf16(a);
    const ck = await Checkpoint.open(a);
    const written = await writeCheckpoint({ outDir: b, input: ck, tensors: copyAllTensors(ck), layout: { kind: 'keep' }, kernelCopy });
    for (const rec of written.tensors) expect(rec.sha256).toBe(sha256(await ck.readBytes(rec.name)));
    await ck.close();
    const filesA = (await readdir(a)).sort();
    expect((await readdir(b)).sort()).toEqual(filesA);
    for (const f of filesA) expect(sameBytes(await readFile(join(a, f)), await readFile(join(b, f)))).toBe(true);
  });

  it('re-plans sharded BF16 into one model.safetensors without index, bit-exact', async () => {
    const a = join(dir, 'replan-a');
    const b = join(dir, 'replan-b');
    await writeShardedBf16(a);
    const ck = await Checkpoint.open(a);
    await writeCheckpoint({ outDir: b, input: ck, tensors: copyAllTensors(ck), layout: { kind: 'plan' } });
    const single = await Checkpoint.open(b);
    expect(single.shardFiles).toEqual(['model.safetensors']);
    expect(single.index).toBeUndefined();
    for (const name of ck.tensorNames()) expect(sameBytes(await single.readBytes(name), await ck.readBytes(name))).toBe(true);
    await single.close();
    await ck.close();
  });

  it('streams large copied tensors (zero-copy chunks, split and small tail chunks) byte for byte', async () => {
    const src = join(dir, 'large-src');
    const sizes = { a: 5 << 20, b: (20 << 20) + 3, c: 100, d: (17 << 20) + 1, e: 4 << 20 };
    await writeCheckpoint({
      outDir: src,
      tensors: Object.entries(sizes).map(([name, n], i) => ({ name, dtype: 'U8' as const, shape: [n], source: { kind: 'bytes' as const, data: pseudoRandomBytes(n, i + 1) } })),
      hash: false,
    });
    const ck = await Checkpoint.open(src, { requireConfig: false });
    const out = join(dir, 'large-out');
    const written = await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck), layout: { kind: 'plan', maxShardBytes: 30_000_000 }, kernelCopy: false });
    const back = await Checkpoint.open(out, { requireConfig: false });
    expect(back.shardFiles.length).toBe(2);
    for (const [name, n] of Object.entries(sizes)) {
      const bytes = await back.readBytes(name);
      expect(bytes.length).toBe(n);
      expect(sameBytes(bytes, await ck.readBytes(name))).toBe(true);
      expect(written.tensors.find((t) => t.name === name)!.sha256).toBe(sha256(bytes));
    }
    await back.close();
    await ck.close();
  });

  it('writes given files over copied ones', async () => {
    const out = join(dir, 'override');
    const ck = await Checkpoint.open(input);
    await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck), files: { 'config.json': '{"changed":true}\n', 'apex.json': '{}' } });
    await ck.close();
    expect(await readFile(join(out, 'config.json'), 'utf8')).toBe('{"changed":true}\n');
    expect(await readFile(join(out, 'apex.json'), 'utf8')).toBe('{}');
  });
});

describe('all-or-nothing output', () => {
  const leftovers = async (out: string) => (await readdir(dir)).filter((f) => f.startsWith(`${out.split('/').pop()}.`) || f === out.split('/').pop());

  it('refuses an existing non-empty output unless forced', async () => {
    const out = join(dir, 'exists');
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'mine');
    const ck = await Checkpoint.open(input);
    const err = await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).code).toBe('OUTPUT_EXISTS');
    expect(await readdir(out)).toEqual(['keep.txt']);
    await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck), force: true });
    expect(await readdir(out)).toContain('model.safetensors');
    expect(await readdir(out)).not.toContain('keep.txt');
    await ck.close();
  });

  it("a failing caller verification leaves no output and no temporary folder", async () => {
    const out = join(dir, 'verify-fails');
    const ck = await Checkpoint.open(input);
    let sawDir = '';
    const err = await writeCheckpoint({
      outDir: out,
      input: ck,
      tensors: copyAllTensors(ck),
      verify: async (tmp) => {
        sawDir = tmp;
        expect((await readdir(tmp)).includes('model.safetensors')).toBe(true);
        throw new VerificationError('logits differ');
      },
    }).catch((e: unknown) => e);
    await ck.close();
    expect(err).toBeInstanceOf(VerificationError);
    expect(sawDir).toContain('verify-fails.tmp-');
    expect(await leftovers(out)).toEqual([]);
  });

  it('a full disk mid-write (injected ENOSPC) exits 5 and leaves nothing', async () => {
    const out = join(dir, 'enospc');
    const ck = await Checkpoint.open(input);
    let writes = 0;
    const err = await writeCheckpoint({
      outDir: out,
      input: ck,
      tensors: copyAllTensors(ck),
      layout: { kind: 'plan', maxShardBytes: 500_000 },
      beforeWrite: () => {
        if (++writes > 3) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      },
    }).catch((e: unknown) => e);
    await ck.close();
    expect(err).toBeInstanceOf(ResourceLimitError);
    expect((err as ApexError).exit).toBe(5);
    expect((err as ApexError).message).toMatch(/disk full/);
    expect(await leftovers(out)).toEqual([]);
  });

  it.skipIf(!canMountTmpfs())('refuses before writing when a real 1 MiB tmpfs cannot hold the checkpoint', async () => {
    const mnt = join(dir, 'small-fs');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const ck = await Checkpoint.open(input);
      const err = await writeCheckpoint({ outDir: join(mnt, 'out'), input: ck, tensors: copyAllTensors(ck) }).catch((e: unknown) => e);
      await ck.close();
      expect(err).toBeInstanceOf(ResourceLimitError);
      expect((err as ApexError).exit).toBe(5);
      expect((err as ApexError).message).toMatch(/not enough disk space/);
      expect(await readdir(mnt)).toEqual([]);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  it('detects a tensor changed after writing (sha256 re-check)', async () => {
    const out = join(dir, 'tamper');
    const ck = await Checkpoint.open(input);
    const written = await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck) });
    await ck.close();
    const victim = written.tensors.find((t) => t.name === 'model.norm.weight')!;
    const file = join(out, 'model.safetensors');
    const bytes = await readFile(file);
    const dataOffset = 8 + Number(bytes.readBigUInt64LE(0));
    const back = await Checkpoint.open(out);
    const begin = back.info(victim.name).begin;
    await back.close();
    bytes[dataOffset + begin] ^= 1;
    await writeFile(file, bytes);
    await expect(verifyWrittenCheckpoint(out, { ...written, dir: out })).rejects.toThrow(/model.norm.weight.*sha256/);
  });

  it('cleans up temporary folders left by a killed writer', async () => {
    const out = join(dir, 'abandoned');
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
    await mkdir(`${out}.tmp-${deadPid}-0badc0de`);
    await writeFile(join(`${out}.tmp-${deadPid}-0badc0de`, 'model.safetensors'), 'half');
    const ck = await Checkpoint.open(input);
    const warnings: string[] = [];
    await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck), onWarning: (w) => warnings.push(w) });
    await ck.close();
    expect(await leftovers(out)).toEqual(['abandoned']);
    expect(warnings.join('\n')).toMatch(/cleaned up abandoned\.tmp-/);
  });
});

describe('output lock', () => {
  it('a live lock holder makes a second writer fail with OUTPUT_LOCKED naming its PID; nothing is written', async () => {
    const out = join(dir, 'locked');
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      await writeFile(lockPathFor(out), JSON.stringify({ pid: holder.pid, hostname: hostname(), startedAt: new Date().toISOString() }));
      const ck = await Checkpoint.open(input);
      const err = await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck) }).catch((e: unknown) => e);
      await ck.close();
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).code).toBe('OUTPUT_LOCKED');
      expect((err as UsageError).message).toContain(String(holder.pid));
      expect((await readdir(dir)).filter((f) => f.startsWith('locked'))).toEqual(['locked.lock']);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('a stale lock (dead PID on this host) is taken over with a warning and released afterwards', async () => {
    const out = join(dir, 'stale');
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
    await writeFile(lockPathFor(out), JSON.stringify({ pid: deadPid, hostname: hostname(), startedAt: '2020-01-01T00:00:00Z' }));
    const ck = await Checkpoint.open(input);
    const warnings: string[] = [];
    await writeCheckpoint({ outDir: out, input: ck, tensors: copyAllTensors(ck), onWarning: (w) => warnings.push(w) });
    await ck.close();
    expect(warnings.join('\n')).toContain(`stale lock`);
    expect(warnings.join('\n')).toContain(String(deadPid));
    expect((await readdir(dir)).filter((f) => f.startsWith('stale'))).toEqual(['stale']);
  });

  it('of two concurrent writers to the same output exactly one succeeds', async () => {
    const out = join(dir, 'race');
    const a = await Checkpoint.open(input);
    const b = await Checkpoint.open(input);
    const results = await Promise.allSettled([
      writeCheckpoint({ outDir: out, input: a, tensors: copyAllTensors(a) }),
      writeCheckpoint({ outDir: out, input: b, tensors: copyAllTensors(b) }),
    ]);
    await a.close();
    await b.close();
    expect(results.filter((r) => r.status === 'fulfilled').length).toBe(1);
    const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(['OUTPUT_LOCKED', 'OUTPUT_EXISTS']).toContain((failure.reason as ApexError).code);
  });
});
