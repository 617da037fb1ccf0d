// Up-front free-space checks never refuse what the write would do: a filesystem that reports no
// blocks (ramfs, tmpfs size=0, some FUSE) is "unknown", and root may use the reserved blocks.
import { expect, it } from 'vitest';
import { usableFreeBytes } from '../../src/io/free-space.js';

it('no blocks reported means unknown; root counts bfree, others bavail', () => {
  expect(usableFreeBytes({ blocks: 0, bavail: 0, bfree: 0, bsize: 4096 }, 1000)).toBeUndefined();
  expect(usableFreeBytes({ blocks: 0, bavail: 0, bfree: 0, bsize: 4096 }, 0)).toBeUndefined();
  expect(usableFreeBytes({ blocks: 100, bavail: 10, bfree: 15, bsize: 4096 }, 1000)).toBe(10 * 4096);
  expect(usableFreeBytes({ blocks: 100, bavail: 10, bfree: 15, bsize: 4096 }, 0)).toBe(15 * 4096);
});
