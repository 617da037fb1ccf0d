/**
 * The Hugging Face hub cache, laid out exactly as the Python client (`huggingface_hub`) lays it
 * out, so a cache filled by Python is reused by apex and apex's downloads are usable by Python:
 *
 *   <cache>/models--<org>--<name>/refs/<revision>          commit hash of a branch or tag
 *   <cache>/models--<org>--<name>/blobs/<etag>             file contents, named by git sha1
 *                                                          (regular files) or sha256 (LFS files)
 *   <cache>/models--<org>--<name>/snapshots/<commit>/<file> relative symlink to ../../blobs/<etag>
 *
 * Directory defaults follow the Python client too: HF_HUB_CACHE, else $HF_HOME/hub, where HF_HOME
 * defaults to $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { shardFilesOfIndex } from './hub-files.js';

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** `~/x` → `<home>/x`, as Python's `os.path.expanduser` does for the cache variables. */
export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return join(homedir(), path.slice(2));
  return path;
}

export function hfHomeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HOME) return resolve(expandHome(env.HF_HOME));
  const xdg = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  return resolve(xdg, 'huggingface');
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return resolve(expandHome(env.HF_HUB_CACHE));
  return join(hfHomeDir(env), 'hub');
}

/** `org/name` → `models--org--name` (the Python client's `repo_folder_name`). */
export function repoFolderName(repo: string): string {
  return `models--${repo.split('/').join('--')}`;
}

/** One model repo's folder in the cache. */
export class RepoCache {
  readonly root: string;

  constructor(cacheDir: string, readonly repo: string) {
    this.root = join(cacheDir, repoFolderName(repo));
  }

  refPath(revision: string): string {
    return join(this.root, 'refs', revision);
  }

  snapshotDir(commit: string): string {
    return join(this.root, 'snapshots', commit);
  }

  blobPath(etag: string): string {
    return join(this.root, 'blobs', etag);
  }

  /** The commit a revision points to: itself for a commit hash, else the content of refs/<revision>. */
  async commitOf(revision: string): Promise<string | undefined> {
    if (COMMIT_HASH.test(revision)) return revision;
    let text: string;
    try {
      text = await readFile(this.refPath(revision), 'utf8');
    } catch {
      return undefined;
    }
    const commit = text.trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  }

  /** Records which commit a branch or tag points to (atomically: temp file, then rename). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const path = this.refPath(revision);
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, commit);
    await rename(tmp, path);
  }

  /**
   * Points snapshots/<commit>/<file> at blobs/<etag> with a relative symlink, as Python does.
   * The link is made under a temporary name and renamed over the final one, so a reader never
   * sees a missing or half-made entry.
   */
  async link(commit: string, file: string, etag: string): Promise<void> {
    const pointer = join(this.snapshotDir(commit), file);
    await mkdir(dirname(pointer), { recursive: true });
    const tmp = `${pointer}.${randomBytes(6).toString('hex')}.tmp`;
    await symlink(relative(dirname(pointer), this.blobPath(etag)), tmp);
    try {
      await rename(tmp, pointer);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /** Size of a snapshot entry after following its symlink; undefined when missing or dangling. */
  async snapshotFileSize(commit: string, file: string): Promise<number | undefined> {
    return fileSize(join(this.snapshotDir(commit), file));
  }

  /**
   * The snapshot folder for `revision` when it holds a complete checkpoint (see
   * `isCompleteCheckpoint`); undefined when the ref, the snapshot or any needed file is missing.
   */
  async completeSnapshot(revision: string): Promise<{ commit: string; dir: string } | undefined> {
    const commit = await this.commitOf(revision);
    if (!commit) return undefined;
    const dir = this.snapshotDir(commit);
    return (await isCompleteCheckpoint(dir)) ? { commit, dir } : undefined;
  }
}

export async function fileSize(path: string): Promise<number | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A folder apex can load without the network: config.json plus either model.safetensors or the
 * index and every shard it lists, in the order Checkpoint.open reads them (model.safetensors
 * first: an index beside it is not read, so its shards need not be there). Tokenizer and
 * generation files are optional.
 */
export async function isCompleteCheckpoint(dir: string): Promise<boolean> {
  if ((await fileSize(join(dir, 'config.json'))) === undefined) return false;
  if ((await fileSize(join(dir, SINGLE_FILE))) !== undefined) return true;
  if ((await fileSize(join(dir, INDEX_FILE))) !== undefined) {
    let shards: string[];
    try {
      shards = shardFilesOfIndex(JSON.parse(await readFile(join(dir, INDEX_FILE), 'utf8')));
    } catch {
      return false;
    }
    for (const shard of shards) {
      if ((await fileSize(join(dir, shard))) === undefined) return false;
    }
    return true;
  }
  return false;
}
