// A checkpoint output (apex expand) on a read-only filesystem with little free space: refused as
// not writable (exit 2, OUTPUT_NOT_WRITABLE) before the free-space check could call it disk full
// (exit 5). The read-only mount and the free space are injected into node:fs/promises (access
// and statfs); no mount, no root.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { toApexError } from '../../src/errors.js';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';

const inject = vi.hoisted(() => ({ readOnly: undefined as string | undefined, freeBytes: undefined as number | undefined }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const mocked = {
    ...real,
    access: async (path: Parameters<typeof real.access>[0], mode?: number) => {
      if (inject.readOnly !== undefined && String(path) === inject.readOnly && mode !== undefined && (mode & real.constants.W_OK) !== 0) {
        throw Object.assign(new Error(`EROFS: read-only file system, access '${String(path)}'`), { code: 'EROFS' });
      }
      return real.access(path, mode);
    },
    statfs: async (path: Parameters<typeof real.statfs>[0]) => {
      const s = await real.statfs(path);
      return inject.freeBytes === undefined ? s : { ...s, bsize: 4096, bavail: Math.floor(inject.freeBytes / 4096), bfree: Math.floor(inject.freeBytes / 4096) };
    },
  };
  return { ...mocked, default: mocked };
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apex-output-writable-'));
});
afterEach(async () => {
  inject.readOnly = undefined;
  inject.freeBytes = undefined;
  await rm(dir, { recursive: true, force: true });
});

const tensors = [floatTensor('w', 'F32', [1024], async () => new Float32Array(1024))];

describe('writeCheckpoint up-front checks', () => {
  it('read-only and too little space: OUTPUT_NOT_WRITABLE (exit 2) naming the folder, not DISK_FULL', async () => {
    inject.readOnly = dir;
    inject.freeBytes = 0;
    const out = join(dir, 'expanded');
    const e = toApexError(await writeCheckpoint({ outDir: out, tensors }).then(() => undefined, (err: unknown) => err));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(e.message).toContain(out);
    expect(e.message).toContain('read-only');
    expect(await readdir(dir)).toEqual([]);
  });

  it('the nearest existing folder is the one checked when the parent does not exist yet', async () => {
    inject.readOnly = dir;
    const out = join(dir, 'a', 'b', 'expanded');
    const e = toApexError(await writeCheckpoint({ outDir: out, tensors }).then(() => undefined, (err: unknown) => err));
    expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(e.message).toContain(dir);
  });

  it('writable but too little space: still DISK_FULL (exit 5) with the bytes needed', async () => {
    inject.freeBytes = 0;
    const e = toApexError(await writeCheckpoint({ outDir: join(dir, 'expanded'), tensors }).then(() => undefined, (err: unknown) => err));
    expect(e).toMatchObject({ code: 'DISK_FULL', exit: 5 });
  });

  it('writable with room: written', async () => {
    const written = await writeCheckpoint({ outDir: join(dir, 'expanded'), tensors, hash: false });
    expect(written.shardFiles).toEqual(['model.safetensors']);
  });
});
