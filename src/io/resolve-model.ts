/**
 * Turns a model argument into a checkpoint folder: an existing local folder wins; otherwise
 * `org/name[@revision]` is looked up in the Hugging Face cache (a complete snapshot is used with
 * no network at all), and only when it is missing or incomplete — and not offline — are the
 * needed files (see hub-files.ts) downloaded from the Hub into that same cache.
 *
 * A dry run asks for `weights: 'headers'`: the small files are downloaded as always, but of each
 * weight file not already in the cache only its safetensors header is read, over HTTP
 * (hub-headers.ts); the result's `remoteWeights` lists them, and Checkpoint.open builds a
 * header-only checkpoint from it. A complete snapshot in the cache is used as it is.
 *
 * Settings follow the Python client's environment variables: HF_TOKEN / HF_TOKEN_PATH
 * (hf-token.ts), HF_HUB_CACHE / HF_HOME (hf-cache.ts), HF_ENDPOINT and HF_HUB_OFFLINE (here).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError, OfflineCacheMissError } from '../errors.js';
import { didYouMean } from '../util/did-you-mean.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { expandHome, fileSize, hubCacheDir, RepoCache } from './hf-cache.js';
import { findToken } from './hf-token.js';
import { ensureFreeSpace, formatBytes, HubClient, isSha256Etag, type HubContext, type RemoteFile, type RetryOptions, type RevisionInfo } from './hub-download.js';
import { readRemoteHeader, type RemoteWeightFile, type RemoteWeights } from './hub-headers.js';
import { metadataFilesIn, shardFilesOfIndex, weightsLayout } from './hub-files.js';

export interface ResolveOptions {
  /** Default: HF_TOKEN, then the file at HF_TOKEN_PATH (default $HF_HOME/token). */
  token?: string;
  /** Default: HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Default: HF_HUB_OFFLINE=1 (also ON, YES, TRUE, as in the Python client). */
  offline?: boolean;
  /** Default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Injected in tests. */
  fetch?: typeof fetch;
  /** Progress lines (the caller sends them to stderr; never stdout). */
  progress?: (message: string) => void;
  signal?: AbortSignal;
  /** Retry and timeout policy of Hub requests (tests shrink the delays). */
  retry?: RetryOptions;
  /**
   * `download` (default): every file the checkpoint needs. `headers` (dry runs): the small files,
   * and of weight files not in the cache only their headers (ResolvedModel.remoteWeights).
   */
  weights?: 'download' | 'headers';
}

export interface ResolvedModel {
  dir: string;
  source: 'local' | 'cache' | 'hub';
  repo?: string;
  revision?: string;
  commit?: string;
  /**
   * With `weights: 'headers'`: the weight files not downloaded (their headers read from the
   * Hub); `dir` then holds every other file. Absent when every weight file is in `dir`.
   */
  remoteWeights?: RemoteWeights;
}

export const DEFAULT_HUB_URL = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

export function hubUrlFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return (env.HF_ENDPOINT?.trim() || DEFAULT_HUB_URL).replace(/\/+$/, '');
}

export function offlineFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((env.HF_HUB_OFFLINE ?? '').trim().toUpperCase());
}

export async function resolveModel(arg: string, options: ResolveOptions = {}): Promise<ResolvedModel> {
  const local = await localFolder(arg);
  if (local) return { dir: local, source: 'local' };
  const { repo, revision } = parseRepoArgument(arg);
  const cache = new RepoCache(options.cacheDir ?? hubCacheDir(), repo);
  const hit = await cache.completeSnapshot(revision);
  if (hit) return { dir: hit.dir, source: 'cache', repo, revision, commit: hit.commit };
  if (options.offline ?? offlineFromEnv()) {
    throw new OfflineCacheMissError(
      `${repo}@${revision} is not (completely) in the Hugging Face cache at ${cache.root}, and offline mode ` +
        `(HF_HUB_OFFLINE=1) forbids downloading it. Download it once with network access, or pass a local folder${await lookalikeFolder(arg)}.`,
    );
  }
  try {
    const { commit, remoteWeights } = await downloadSnapshot(cache, { repo, revision }, options);
    return { dir: cache.snapshotDir(commit), source: 'hub', repo, revision, commit, ...(remoteWeights ? { remoteWeights } : {}) };
  } catch (e) {
    if (e instanceof OfflineCacheMissError) {
      throw new OfflineCacheMissError(`${e.message}; ${repo}@${revision} is not (completely) in the Hugging Face cache at ${cache.root}${await lookalikeFolder(arg)}`);
    }
    // The Hub answers an anonymous request for a repo that does not exist with 401 (RepoNotFound), not 404.
    if (e instanceof InputError && (e.code === 'HUB_NOT_FOUND' || e.code === 'HUB_UNAUTHORIZED')) throw new InputError(`${e.message}${await lookalikeFolder(arg)}`, e.code, { cause: e });
    throw e;
  }
}

/**
 * A mistyped local path whose first folder is mistyped too (`fixturez/llama-mha-f32`) has the
 * shape of a Hub id and is only known to be neither once the Hub has failed: " (nor a folder
 * here; did you mean fixtures/llama-mha-f32?)" when a folder here is that close, else ''.
 */
async function lookalikeFolder(arg: string): Promise<string> {
  const [org, name] = arg.split('@')[0]!.split('/');
  if (org === undefined || name === undefined) return '';
  const folders = async (dir: string) => {
    try {
      return (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return [];
    }
  };
  const nearOrg = didYouMean(org, await folders(resolve('.')));
  if (nearOrg === undefined) return '';
  const inside = await folders(resolve(nearOrg));
  const nearName = inside.includes(name) ? name : didYouMean(name, inside);
  return nearName === undefined ? '' : ` (nor a folder here; did you mean ${join(nearOrg, nearName)}?)`;
}

/** The folder an argument names, or undefined when it names none and does not look like a path. */
async function localFolder(arg: string): Promise<string | undefined> {
  const looksLikePath = /^(?:\.{1,2}(?:\/|$)|\/|~)/.test(arg);
  const path = resolve(expandHome(arg));
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (e) {
    if (!looksLikePath && !(await insideLocalFolder(arg))) return undefined;
    throw new InputError(`${arg}: no such model folder (${path}: ${(e as NodeJS.ErrnoException).code ?? 'not found'})${await nearbyName(path)}`, 'NOT_FOUND');
  }
  if (!isDir) throw new InputError(`${arg}: is a file; expected a model folder (config.json and safetensors weights) or a Hub repo id`, 'NOT_A_FOLDER');
  return path;
}

/**
 * `fixtures/llama-mha-f33` has the shape of a Hub id, but when `fixtures/` is a folder here it
 * is a mistyped local path: said at once, instead of after the Hub's retries (or as an offline
 * cache miss). A Hub repo whose org shares its name with a folder here is reached from
 * another directory.
 */
async function insideLocalFolder(arg: string): Promise<boolean> {
  const slash = arg.indexOf('/');
  if (slash <= 0) return false;
  try {
    return (await stat(resolve(arg.slice(0, slash)))).isDirectory();
  } catch {
    return false;
  }
}

/** " (did you mean …?)" naming the closest folder next to a missing one, or ''. */
async function nearbyName(path: string): Promise<string> {
  let names: string[];
  try {
    names = (await readdir(dirname(path), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return '';
  }
  const near = didYouMean(basename(path), names);
  return near === undefined ? '' : ` (did you mean ${join(dirname(path), near)}?)`;
}

/** One part of a repo id: word characters, '-' and '.', starting and ending with a word character. */
const REPO_PART = /^[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$/;

/** `org/name[@revision]` → repo and revision (default `main`), with the Python client's id rules. */
export function parseRepoArgument(arg: string): HubContext {
  const at = arg.indexOf('@');
  const repo = at < 0 ? arg : arg.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : arg.slice(at + 1);
  const parts = repo.split('/');
  const validRepo = parts.length === 2 && parts.every((p) => REPO_PART.test(p)) && !/--|\.\./.test(repo) && repo.length <= 96;
  // The revision becomes a path under refs/: no empty, parent or absolute segments.
  const validRevision = revision.length > 0 && revision.split('/').every((s) => s !== '' && s !== '.' && s !== '..') && !/[\\\0-\x1f]/.test(revision);
  if (!validRepo || !validRevision) {
    throw new InputError(`${arg}: not an existing local folder, and not a Hugging Face repo id of the form org/name[@revision]`, 'NOT_FOUND');
  }
  return { repo, revision };
}

/**
 * Downloads what a checkpoint needs into the cache; returns the commit of the snapshot. With
 * `weights: 'headers'`, weight files not in the cache are not downloaded but their headers read
 * (remoteWeights), except a weight file stored in git rather than LFS (small by the Hub's rules,
 * and without a sha256 from the Hub to fingerprint it by), which is downloaded.
 */
async function downloadSnapshot(cache: RepoCache, ctx: HubContext, options: ResolveOptions): Promise<{ commit: string; remoteWeights?: RemoteWeights }> {
  const hubUrl = (options.hubUrl ?? hubUrlFromEnv()).replace(/\/+$/, '');
  const token = findToken(options.token);
  const client = new HubClient({
    hubUrl,
    token: token.token,
    tokenFile: token.file,
    fetch: options.fetch ?? globalThis.fetch,
    retry: options.retry,
    progress: options.progress,
    signal: options.signal,
  });
  options.progress?.(`looking up ${ctx.repo}@${ctx.revision} on ${hubUrl}`);
  const info = await client.revisionInfo(ctx);
  const layout = weightsLayout(info.files, ctx.repo);
  const describe = (path: string): Promise<RemoteFile> => {
    const known = info.described.get(path);
    return known ? Promise.resolve(known) : client.describe(ctx, info.commit, path);
  };
  const cached = async (file: RemoteFile): Promise<boolean> =>
    (await cache.snapshotFileSize(info.commit, file.path)) === file.size || (await fileSize(cache.blobPath(file.etag))) === file.size;
  const place = async (file: RemoteFile): Promise<void> => {
    if ((await cache.snapshotFileSize(info.commit, file.path)) === file.size) return;
    if ((await fileSize(cache.blobPath(file.etag))) !== file.size) {
      await client.download(ctx, info.commit, file, cache.blobPath(file.etag));
    }
    await cache.link(info.commit, file.path, file.etag);
  };

  const small = [...metadataFilesIn(info.files, ctx.repo), ...(layout === 'index' ? [INDEX_FILE] : [])];
  for (const path of small) await place(await describe(path));

  const weightNames = layout === 'index' ? await shardsOf(cache, ctx, info) : [SINGLE_FILE];
  const weights: RemoteFile[] = [];
  for (const path of weightNames) weights.push(await describe(path));
  let missing = 0;
  const absent: RemoteFile[] = [];
  for (const w of weights) {
    if (!(await cached(w))) {
      missing += w.size;
      absent.push(w);
    }
  }
  // A dry run is refused for want of room as the run would be.
  await ensureFreeSpace(join(cache.root, 'blobs'), missing);
  const headersOnly = options.weights === 'headers' ? absent.filter((w) => isSha256Etag(w.etag)) : [];
  const remote: RemoteWeightFile[] = [];
  let headerBytes = 0;
  if (headersOnly.length > 0) {
    const bytes = headersOnly.reduce((n, w) => n + w.size, 0);
    options.progress?.(`${ctx.repo}@${ctx.revision} (commit ${info.commit.slice(0, 8)}): reading the headers of ${headersOnly.length} weight file(s) from the Hub; ${formatBytes(bytes)} not downloaded (dry run)`);
    for (const w of headersOnly) {
      const { weight, received } = await readRemoteHeader(client, ctx, info.commit, w);
      remote.push(weight);
      headerBytes += received;
    }
  }
  const toDownload = weights.filter((w) => !headersOnly.includes(w));
  const downloading = toDownload.filter((w) => absent.includes(w)).reduce((n, w) => n + w.size, 0);
  if (headersOnly.length === 0 || downloading > 0) {
    options.progress?.(`${ctx.repo}@${ctx.revision} (commit ${info.commit.slice(0, 8)}): ${toDownload.length} weight file(s), ${formatBytes(downloading)} to download`);
  }
  for (const w of toDownload) await place(w);

  if (remote.length === 0) {
    await cache.writeRef(ctx.revision, info.commit);
    options.progress?.(`${ctx.repo}@${ctx.revision} cached in ${cache.snapshotDir(info.commit)}`);
    return { commit: info.commit };
  }
  // The ref is written once every needed file is there (never to a snapshot with weights missing).
  options.progress?.(`${ctx.repo}@${ctx.revision}: config and tokenizer files cached in ${cache.snapshotDir(info.commit)}, ${remote.length} weight file(s) left on the Hub`);
  return {
    commit: info.commit,
    remoteWeights: { repo: ctx.repo, revision: ctx.revision, commit: info.commit, hubUrl, files: remote, bytes: remote.reduce((n, f) => n + f.bytes, 0), headerBytes },
  };
}

/** The shard files the (already cached) index lists, each checked against the repo's files. */
async function shardsOf(cache: RepoCache, ctx: HubContext, info: RevisionInfo): Promise<string[]> {
  const indexPath = join(cache.snapshotDir(info.commit), INDEX_FILE);
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (e) {
    throw new InputError(`${ctx.repo}@${ctx.revision}: ${INDEX_FILE} is not valid JSON (${(e as Error).message})`, 'INDEX_FORMAT');
  }
  const shards = shardFilesOfIndex(index);
  const absent = shards.filter((s) => !info.files.has(s));
  if (absent.length > 0) {
    throw new InputError(`${ctx.repo}@${ctx.revision}: ${INDEX_FILE} lists ${absent.join(', ')}, which the repo does not have`, 'INDEX_MISMATCH');
  }
  return shards;
}
