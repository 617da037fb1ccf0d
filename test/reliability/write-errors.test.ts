// Writes of finetune's own files (metrics.jsonl, a checkpoint's state.json, loss.svg and the
// run's index.html through writeTextAtomic) said as output errors naming the file: EROFS,
// EACCES and EPERM are exit 2 OUTPUT_NOT_WRITABLE, ENOSPC/EDQUOT exit 5 DISK_FULL, instead of
// exit 1 INTERNAL or a raw errno as an input error (exit 3). The errno is injected into
// node:fs/promises (no mount, no root needed); everything else is the real filesystem.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { toApexError } from '../../src/errors.js';
import { appendMetrics, truncateMetrics } from '../../src/train/metrics-log.js';
import { writeTextAtomic } from '../../src/train/stage-outputs.js';
import { saveTrainState, type TrainStateToSave } from '../../src/train/train-state.js';

/** Which call (by function name and path) fails with which errno; undefined: none. */
const inject = vi.hoisted(() => ({ fail: undefined as undefined | ((fn: string, path: string) => string | undefined) }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const wrap = <F extends (...args: never[]) => Promise<unknown>>(name: string, fn: F): F =>
    (async (...args: Parameters<F>) => {
      const path = String(args[0]);
      const code = inject.fail?.(name, path);
      if (code === undefined) return fn(...args);
      // As a real ENOSPC does: the file was created before the write failed.
      if (name === 'writeFile') await real.writeFile(path, '');
      throw Object.assign(new Error(`${code}: simulated failure, ${name} '${path}'`), { code, path });
    }) as F;
  const mocked = { ...real, appendFile: wrap('appendFile', real.appendFile), writeFile: wrap('writeFile', real.writeFile), open: wrap('open', real.open), rename: wrap('rename', real.rename) };
  return { ...mocked, default: mocked };
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apex-write-errors-'));
  inject.fail = undefined;
});
afterEach(async () => {
  inject.fail = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** The error as the CLI would report it. */
async function reported(p: Promise<unknown>) {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e, 'expected a failure').toBeDefined();
  return toApexError(e);
}

const LINE = { step: 1, tokens: 64, loss: 2.5, elapsed: 1 };

describe('metrics.jsonl', () => {
  it('an append refused by the filesystem: OUTPUT_NOT_WRITABLE (exit 2) or DISK_FULL (exit 5) naming the file', async () => {
    const path = join(dir, 'metrics.jsonl');
    for (const [code, expected] of [['EROFS', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }], ['EACCES', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }], ['EPERM', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }], ['ENOSPC', { code: 'DISK_FULL', exit: 5 }], ['EDQUOT', { code: 'DISK_FULL', exit: 5 }]] as const) {
      inject.fail = (fn) => (fn === 'appendFile' ? code : undefined);
      const e = await reported(appendMetrics(path, LINE));
      expect(e, code).toMatchObject(expected);
      expect(e.message, code).toContain(path);
    }
  });

  it('the resume rewrite failing: names the file and removes its temporary', async () => {
    const path = join(dir, 'metrics.jsonl');
    await appendMetrics(path, LINE);
    await appendMetrics(path, { ...LINE, step: 2 });
    inject.fail = (fn, p) => (fn === 'writeFile' && p.includes('.tmp-') ? 'ENOSPC' : undefined);
    const e = await reported(truncateMetrics(path, 1));
    expect(e).toMatchObject({ code: 'DISK_FULL', exit: 5 });
    expect(e.message).toContain(path);
    expect(await readdir(dir)).toEqual(['metrics.jsonl']); // no zero-byte .metrics.jsonl.tmp-… left
    inject.fail = (fn) => (fn === 'rename' ? 'EROFS' : undefined);
    const r = await reported(truncateMetrics(path, 1));
    expect(r).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
    expect(await readdir(dir)).toEqual(['metrics.jsonl']);
  });
});

describe("a checkpoint's state.json", () => {
  it('a refused write: OUTPUT_NOT_WRITABLE naming state.json, no checkpoint or temporary left', async () => {
    const state: TrainStateToSave = {
      scalars: { stage: 1, step: 3, globalStep: 3, tokens: 96, data: { epoch: 0, index: 3, shuffleSeed: 1 }, rng: [1, 2, 3, 4], lrPlan: { peakLr: 1e-3, totalSteps: 3, stageStarts: [0] } },
      trainable: new Map([['w', { shape: [2], values: Float32Array.from([1, 2]) }]]),
      optimizer: { step: 3, firstMoments: new Map([['w', Float32Array.from([0, 0])]]), secondMoments: new Map([['w', Float32Array.from([0, 0])]]) },
    };
    for (const [code, expected] of [['EROFS', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }], ['ENOSPC', { code: 'DISK_FULL', exit: 5 }]] as const) {
      inject.fail = (fn, p) => (fn === 'writeFile' && p.endsWith('state.json') ? code : undefined);
      const e = await reported(saveTrainState(join(dir, 'checkpoints'), state));
      expect(e, code).toMatchObject(expected);
      expect(e.message, code).toContain('state.json');
      expect(await readdir(join(dir, 'checkpoints')), code).toEqual([]);
    }
  });
});

describe('writeTextAtomic (loss.svg, index.html)', () => {
  it('a refused create, write or rename: names the file, exit 2 or 5, no temporary left', async () => {
    const path = join(dir, 'index.html');
    const cases = [
      ['open', 'EACCES', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }],
      ['open', 'EROFS', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }],
      ['open', 'EDQUOT', { code: 'DISK_FULL', exit: 5 }],
      ['rename', 'EPERM', { code: 'OUTPUT_NOT_WRITABLE', exit: 2 }],
    ] as const;
    for (const [fn, code, expected] of cases) {
      inject.fail = (f) => (f === fn ? code : undefined);
      const e = await reported(writeTextAtomic(path, '<html></html>'));
      expect(e, `${fn} ${code}`).toMatchObject(expected);
      expect(e.message, `${fn} ${code}`).toContain(path);
      expect(await readdir(dir), `${fn} ${code}`).toEqual([]);
    }
  });
});
