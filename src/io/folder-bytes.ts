/**
 * Bytes a folder's files take on disk (allocated blocks, so sparse files count what they hold),
 * links not followed: what deleting the folder frees, as a dry run weighs it against free space.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export async function folderBytes(path: string): Promise<number> {
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  if (!st.isDirectory()) return st.blocks * 512;
  let total = 0;
  for (const name of await readdir(path)) total += await folderBytes(join(path, name));
  return total;
}
