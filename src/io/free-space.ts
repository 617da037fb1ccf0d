/**
 * Free bytes a write can use, from statfs: undefined where the filesystem does not say (it
 * reports no blocks at all: ramfs, tmpfs mounted with size=0, some FUSE filesystems, all of which
 * accept writes), so that an up-front check never refuses what the write would do. Root may
 * also write into the blocks reserved for it (bfree), others only into bavail.
 */
import type { StatsFs } from 'node:fs';

export function usableFreeBytes(s: Pick<StatsFs, 'blocks' | 'bavail' | 'bfree' | 'bsize'>, uid: number | undefined = process.getuid?.()): number | undefined {
  if (s.blocks === 0) return undefined;
  return (uid === 0 ? s.bfree : s.bavail) * s.bsize;
}
