/**
 * HTTP access to the Hugging Face Hub for model downloads: the revision's commit and file list,
 * per-file metadata, and verified, resumable, retried downloads into the cache's blobs/ folder.
 *
 * Why plain HTTP with the injected `fetch` rather than `@huggingface/hub` (2.17) download helpers:
 * - `downloadFileToCacheDir` puts each file in snapshots/<last commit that touched the file>
 *   rather than snapshots/<commit of the requested revision>, and neither it nor
 *   `snapshotDownload` writes refs/<revision> for single files, so the result is not the Python
 *   client's layout; `snapshotDownload` fetches the whole repo (.bin, original/, .gguf included).
 * - It verifies neither size nor hash, does not retry or resume, and reports no progress.
 * - It logs with console.debug, which writes to stdout and would corrupt `--json` output.
 * - It makes one paths-info request per file; here one `api/models/<repo>/revision/<rev>?blobs=true`
 *   request gives the commit, the file list, sizes and hashes.
 * The endpoints used are the ones the Python client uses: the revision API above,
 * `GET <hub>/<repo>/resolve/<commit>/<file>` for contents, and `HEAD` on the same URL for a file's
 * etag and size when the revision API omits them (some mirrors).
 *
 * Integrity: a blob is named by its etag (sha256 for LFS files, git blob sha1 for regular files)
 * and the downloaded bytes are checked against both the size and that hash before the
 * download file is renamed into place. Each download writes to a file of its own
 * (`<etag>.incomplete.<pid>-<random>`), so two processes fetching the same blob never write into
 * one file (which would let one rename a mix that only its own stream had hashed). A transfer cut
 * by the network or an interrupt leaves `<etag>.incomplete` (the Python client's name); the next
 * download claims it with an atomic rename and resumes it with a Range request. Private files of
 * processes that died (SIGKILL) are removed.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, statfs } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { basename, dirname, join } from 'node:path';
import { ApexError, InputError, InterruptedError, OfflineCacheMissError, ResourceLimitError } from '../errors.js';
import { fileSize } from './hf-cache.js';
import { processAlive } from './stale-temps.js';
import { usableFreeBytes } from './free-space.js';

export interface RetryOptions {
  /** Tries per request, the first included (default 5). */
  attempts?: number;
  /** Delay before the second try; doubles each time up to maxDelayMs (defaults 1000 / 30000). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A request that receives no byte for this long is aborted and retried (default 60000). */
  idleTimeoutMs?: number;
}

export interface HubClientOptions {
  hubUrl: string;
  token?: string;
  /** Where a token would be read from, for the hint in 401/403 messages. */
  tokenFile: string;
  fetch: typeof fetch;
  retry?: RetryOptions;
  progress?: (message: string) => void;
  signal?: AbortSignal;
}

/** What a request is about, for error messages. */
export interface HubContext {
  repo: string;
  revision: string;
}

/** A file of a repo at a commit: its size and etag (sha256 for LFS files, git sha1 otherwise). */
export interface RemoteFile {
  path: string;
  size: number;
  etag: string;
}

/** True when `etag` is an LFS sha256 (the sha256 of the file's bytes), not a git blob sha1. */
export function isSha256Etag(etag: string): boolean {
  return SHA256.test(etag);
}

export interface RevisionInfo {
  commit: string;
  /** Every file name in the repo at that commit. */
  files: ReadonlySet<string>;
  /** Size and etag of the files the API described (all of them on huggingface.co). */
  described: ReadonlyMap<string, RemoteFile>;
}

/** A failure worth another try: the network ('network') or bytes that did not check out ('integrity'). */
class TransientFailure extends Error {
  constructor(message: string, readonly kind: 'network' | 'integrity') {
    super(message);
  }
}

/** Marks an abort caused by the idle timeout (as opposed to the caller's signal). */
class IdleTimeout extends Error {}

interface Attempt {
  /** fetch with the token, the attempt's abort signal and the idle timer armed. */
  fetch(url: string, init?: RequestInit): Promise<Response>;
  /** Restarts the idle timer; call on every chunk received. */
  kick(): void;
}

const SHA256 = /^[0-9a-f]{64}$/;
const GIT_SHA1 = /^[0-9a-f]{40}$/;

/** `W/"abc"` or `"abc"` → `abc` (the Python client's `_normalize_etag`). */
export function normalizeEtag(etag: string | null): string | undefined {
  if (!etag) return undefined;
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '') || undefined;
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) { v /= 1000; u += 1; }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

export class HubClient {
  private readonly hubUrl: string;
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly idleTimeoutMs: number;

  constructor(private readonly options: HubClientOptions) {
    this.hubUrl = options.hubUrl.replace(/\/+$/, '');
    this.attempts = Math.max(1, options.retry?.attempts ?? 5);
    this.baseDelayMs = options.retry?.baseDelayMs ?? 1000;
    this.maxDelayMs = options.retry?.maxDelayMs ?? 30_000;
    this.idleTimeoutMs = options.retry?.idleTimeoutMs ?? 60_000;
  }

  /** The commit a revision points to and the repo's files at that commit. */
  async revisionInfo(ctx: HubContext): Promise<RevisionInfo> {
    const url = `${this.hubUrl}/api/models/${ctx.repo}/revision/${encodeURIComponent(ctx.revision)}?blobs=true`;
    const body = await this.withRetry(`${ctx.repo}@${ctx.revision}: revision info`, async (attempt) => {
      const res = await attempt.fetch(url);
      await this.check(res, ctx);
      const text = await res.text();
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new InputError(`${ctx.repo}@${ctx.revision}: ${this.hubUrl} answered with something that is not JSON (is HF_ENDPOINT a Hub?)`, 'HUB_RESPONSE');
      }
    });
    return parseRevisionInfo(body, ctx, this.hubUrl);
  }

  /** Size and etag of one file from a HEAD request (for Hubs whose revision API omits them). */
  async describe(ctx: HubContext, commit: string, path: string): Promise<RemoteFile> {
    return this.withRetry(`${ctx.repo}/${path}: metadata`, async (attempt) => {
      let url = this.resolveUrl(ctx.repo, commit, path);
      for (let hop = 0; hop < 5; hop += 1) {
        const res = await attempt.fetch(url, { method: 'HEAD', redirect: 'manual', headers: { 'Accept-Encoding': 'identity' } });
        const linkedEtag = res.headers.get('x-linked-etag');
        const location = res.headers.get('location');
        if (res.status >= 300 && res.status < 400 && !linkedEtag && location) {
          // A renamed repo redirects within the Hub; the token may only follow same-origin hops.
          const next = new URL(location, url);
          if (next.origin !== new URL(this.hubUrl).origin) break;
          url = next.href;
          continue;
        }
        if (res.status >= 400) await this.check(res, ctx, path);
        const etag = normalizeEtag(linkedEtag ?? res.headers.get('etag'));
        const size = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? NaN);
        if (!etag || !Number.isSafeInteger(size) || size < 0) {
          throw new InputError(`${ctx.repo}/${path}: ${this.hubUrl} gave no etag or size for the file`, 'HUB_RESPONSE');
        }
        // The etag names the blob file and is the hash its bytes are checked against: anything
        // but a hash (a path such as "../x" included) is refused, never used as a file name.
        if (!SHA256.test(etag) && !GIT_SHA1.test(etag)) {
          throw new InputError(
            `${ctx.repo}/${path}: ${this.hubUrl} gave etag ${JSON.stringify(etag.slice(0, 80))}, which is neither a sha256 nor a git sha1; apex names and verifies blobs by that hash`,
            'HUB_RESPONSE',
          );
        }
        return { path, size, etag };
      }
      throw new InputError(`${ctx.repo}/${path}: too many or cross-site redirects from ${this.hubUrl} while reading file metadata`, 'HUB_RESPONSE');
    });
  }

  /**
   * Downloads `file` at `commit` into `blobPath`, which appears only once its size and hash
   * check out. A partial `<blobPath>.incomplete` from an earlier run is resumed.
   */
  async download(ctx: HubContext, commit: string, file: RemoteFile, blobPath: string): Promise<void> {
    const shared = `${blobPath}.incomplete`;
    const mine = `${shared}.${process.pid}-${randomBytes(4).toString('hex')}`;
    const url = this.resolveUrl(ctx.repo, commit, file.path);
    await mkdir(dirname(blobPath), { recursive: true });
    await removeOrphans(blobPath);
    await rename(shared, mine).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    this.options.progress?.(`downloading ${file.path} (${formatBytes(file.size)})`);
    try {
      await this.withRetry(`${ctx.repo}/${file.path}`, async (attempt) => {
        let have = (await fileSize(mine)) ?? 0;
        if (have > 0 && have >= file.size) {
          // A previous run stopped between the last byte and the rename, or left garbage.
          if (have === file.size && (await hashFile(mine, newHasher(file))) === file.etag) {
            await rename(mine, blobPath);
            return;
          }
          await rm(mine, { force: true });
          have = 0;
        }
        const headers: Record<string, string> = { 'Accept-Encoding': 'identity' };
        if (have > 0) headers.Range = `bytes=${have}-`;
        const res = await attempt.fetch(url, { headers });
        if (res.status === 416) {
          await res.body?.cancel();
          await rm(mine, { force: true });
          throw new TransientFailure('the server refused to resume the partial download', 'integrity');
        }
        await this.check(res, ctx, file.path);
        if (!(res.status === 206 && rangeStart(res) === have)) have = 0;
        const expectedLength = file.size - have;
        const declared = res.headers.get('content-length');
        const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
        if (declared !== null && !encoded && Number(declared) !== expectedLength) {
          await res.body?.cancel();
          await rm(mine, { force: true });
          throw new TransientFailure(`server announced ${declared} bytes, expected ${expectedLength} (size ${file.size})`, 'integrity');
        }
        const hasher = newHasher(file);
        if (have > 0) await hashFile(mine, hasher);
        const received = await this.receive(res, mine, have, file, hasher, attempt);
        if (received < file.size) {
          throw new TransientFailure(`connection ended after ${received} of ${file.size} bytes`, 'network');
        }
        const digest = hasher.digest('hex');
        if (digest !== file.etag) {
          await rm(mine, { force: true });
          throw new TransientFailure(`content hash ${digest} does not match ${file.etag}`, 'integrity');
        }
        await rename(mine, blobPath);
      });
    } catch (e) {
      // Hand a valid prefix on to the next run; anything else is deleted.
      const resumable = e instanceof InterruptedError || e instanceof OfflineCacheMissError;
      if (resumable && (await fileSize(mine))) await rename(mine, shared);
      else await rm(mine, { force: true });
      throw e;
    }
  }

  /**
   * Bytes [start, start + length) of `file` at `commit`, with a Range request (a dry run reads
   * safetensors headers this way instead of downloading the weights). The answer's
   * Content-Range must start where asked and give the size the Hub listed; a server that ignores
   * Range (200) is read only up to the end of the range, and the connection then dropped. A 206
   * may hold less than was asked (RFC 9110 §15.3.7: its Content-Range says what it holds): the
   * rest is asked for again, as many times as needed.
   */
  async readRange(ctx: HubContext, commit: string, file: RemoteFile, start: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(Math.max(0, length));
    let got = 0;
    // Each answer holds at least one byte (a 206's range ends at or after where it starts).
    while (got < length) got += await this.readRangeOnce(ctx, commit, file, out, start, got);
    return out;
  }

  /** One request for bytes [start + got, start + out.length) into out[got…]; returns how many it received. */
  private async readRangeOnce(ctx: HubContext, commit: string, file: RemoteFile, out: Uint8Array, start: number, got: number): Promise<number> {
    const from = start + got;
    const end = start + out.length - 1;
    const url = this.resolveUrl(ctx.repo, commit, file.path);
    return this.withRetry(`${ctx.repo}/${file.path} (bytes ${from}-${end})`, async (attempt) => {
      const res = await attempt.fetch(url, { headers: { 'Accept-Encoding': 'identity', Range: `bytes=${from}-${end}` } });
      if (res.status === 416) {
        await res.body?.cancel();
        throw new TransientFailure(`the server refused bytes ${from}-${end} of a file the Hub lists as ${file.size} bytes`, 'integrity');
      }
      await this.check(res, ctx, file.path);
      let skip = 0;
      // Bytes this answer is to give: up to `end`, or a 206's own end when it holds less.
      let want = end - from + 1;
      if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== from || Number(m[2]) < from) {
          await res.body?.cancel();
          throw new TransientFailure(`asked for bytes ${from}-${end}, the server answered ${JSON.stringify(res.headers.get('content-range'))}`, 'integrity');
        }
        if (m[3] !== '*' && Number(m[3]) !== file.size) {
          await res.body?.cancel();
          throw new TransientFailure(`the file is ${m[3]} bytes on the server, the Hub lists ${file.size}`, 'integrity');
        }
        want = Math.min(want, Number(m[2]) - from + 1);
      } else {
        skip = from; // the whole file from byte 0
      }
      const target = out.subarray(got, got + want);
      let at = -skip;
      if (res.body) {
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        try {
          while (at < want) {
            const { done, value } = await reader.read();
            if (done) break;
            attempt.kick();
            const first = Math.max(0, -at);
            if (first < value.length) target.set(value.subarray(first, Math.min(value.length, first + want - Math.max(0, at))), Math.max(0, at));
            at += value.length;
          }
        } finally {
          await reader.cancel().catch(() => {});
        }
      }
      if (at < want) throw new TransientFailure(`connection ended after ${Math.max(0, at)} of the ${want} bytes asked for`, 'network');
      return want;
    });
  }

  /** Streams a response body into this download's file (appending after `have` bytes). */
  private async receive(res: Response, path: string, have: number, file: RemoteFile, hasher: Hash, attempt: Attempt): Promise<number> {
    const fh = await open(path, have > 0 ? 'a' : 'w');
    let received = have;
    let reported = -1;
    try {
      if (res.body) {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          attempt.kick();
          if (received + chunk.length > file.size) {
            await rm(path, { force: true });
            throw new TransientFailure(`server sent more than the ${file.size} bytes expected`, 'integrity');
          }
          hasher.update(chunk);
          await fh.write(chunk);
          received += chunk.length;
          const step = Math.floor((received / file.size) * 20);
          if (file.size >= 1 << 20 && step > reported) {
            reported = step;
            this.options.progress?.(`downloading ${file.path}: ${formatBytes(received)} of ${formatBytes(file.size)} (${step * 5}%)`);
          }
        }
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    return received;
  }

  private resolveUrl(repo: string, commit: string, path: string): string {
    return `${this.hubUrl}/${repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** Throws for a non-2xx response: transient for 408/429/5xx, a clear InputError otherwise. */
  private async check(res: Response, ctx: HubContext, file?: string): Promise<void> {
    if (res.status >= 200 && res.status < 300) return;
    await res.body?.cancel();
    const hub = this.hubUrl;
    const code = res.headers.get('x-error-code') ?? '';
    const serverSays = (res.headers.get('x-error-message') ?? '').slice(0, 300);
    const detail = `HTTP ${res.status}${code ? ` ${code}` : ''}${serverSays ? `: ${serverSays}` : ''}`;
    if (res.status === 408 || res.status === 429 || res.status >= 500) throw new TransientFailure(detail, 'network');
    const where = `${ctx.repo}@${ctx.revision}`;
    const tokenHint = `Set HF_TOKEN or save a token in ${this.options.tokenFile}.`;
    if (res.status === 401) {
      const sent = this.options.token ? 'the Hugging Face token sent was rejected (invalid or expired)' : 'no Hugging Face token was sent';
      throw new InputError(
        `${where}: access denied by ${hub} (${detail}): ${sent}. The repo may be private, may not exist, or may be a gated repo ` +
          `(accept its terms at ${hub}/${ctx.repo} and use a token of that account). ${tokenHint}`,
        'HUB_UNAUTHORIZED',
      );
    }
    if (res.status === 403) {
      throw new InputError(
        `${where}: access forbidden by ${hub} (${detail}): the token does not give access to this repo. If it is a gated repo, ` +
          `request access / accept its terms at ${hub}/${ctx.repo} with the token's account and use a token allowed to read gated repos.`,
        'HUB_FORBIDDEN',
      );
    }
    if (res.status === 404) {
      const what = code === 'EntryNotFound' && file ? `file ${file} not found in the repo` : 'repo or revision not found';
      throw new InputError(`${where}: ${what} on ${hub} (${detail})`, 'HUB_NOT_FOUND');
    }
    throw new InputError(`${where}${file ? ` ${file}` : ''}: ${hub} refused the request (${detail})`, 'HUB_REQUEST');
  }

  /**
   * Runs `body` until it succeeds, retrying transient failures with exponential backoff. After
   * the last try a network failure becomes OfflineCacheMissError (exit 4: the Hub could not be
   * reached and the files are not cached) and an integrity failure an InputError (exit 3).
   */
  private async withRetry<T>(what: string, body: (attempt: Attempt) => Promise<T>): Promise<T> {
    const userSignal = this.options.signal;
    for (let n = 1; ; n += 1) {
      throwIfAborted(userSignal);
      const controller = new AbortController();
      const onAbort = () => controller.abort(userSignal?.reason);
      userSignal?.addEventListener('abort', onAbort, { once: true });
      let timer: NodeJS.Timeout | undefined;
      const kick = () => {
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(new IdleTimeout()), this.idleTimeoutMs);
      };
      const attempt: Attempt = {
        kick,
        fetch: (url, init = {}) => {
          kick();
          const headers = new Headers(init.headers);
          if (this.options.token) headers.set('Authorization', `Bearer ${this.options.token}`);
          return this.options.fetch(url, { ...init, headers, signal: controller.signal });
        },
      };
      let failure: TransientFailure;
      try {
        return await body(attempt);
      } catch (e) {
        throwIfAborted(userSignal);
        // Typed errors and local filesystem errors (ENOSPC, EACCES: they carry a syscall) are final.
        if (e instanceof ApexError || (e as NodeJS.ErrnoException)?.syscall !== undefined) throw e;
        failure = e instanceof TransientFailure
          ? e
          : controller.signal.reason instanceof IdleTimeout
            ? new TransientFailure(`no data for ${this.idleTimeoutMs} ms`, 'network')
            : new TransientFailure(networkMessage(e), 'network');
      } finally {
        clearTimeout(timer);
        userSignal?.removeEventListener('abort', onAbort);
      }
      if (n >= this.attempts) {
        const message = `${what}: ${failure.message} (gave up after ${n} attempt${n > 1 ? 's' : ''})`;
        if (failure.kind === 'integrity') throw new InputError(`${message}; the download failed verification`, 'DOWNLOAD_CORRUPT');
        throw new OfflineCacheMissError(`${message}; could not download from ${this.hubUrl}`);
      }
      const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (n - 1));
      this.options.progress?.(`${what}: ${failure.message}; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${n + 1} of ${this.attempts})`);
      try {
        await sleep(delay, undefined, { signal: userSignal });
      } catch {
        throwIfAborted(userSignal);
      }
    }
  }
}

/** Deletes `<blob>.incomplete.<pid>-<random>` files whose process no longer runs. */
async function removeOrphans(blobPath: string): Promise<void> {
  const prefix = `${basename(blobPath)}.incomplete.`;
  for (const name of await readdir(dirname(blobPath))) {
    const pid = name.startsWith(prefix) ? Number(/^(\d+)-/.exec(name.slice(prefix.length))?.[1]) : NaN;
    if (Number.isSafeInteger(pid) && !processAlive(pid)) await rm(join(dirname(blobPath), name), { force: true });
  }
}

/** Refuses to start downloading `bytes` into `dir` when the filesystem has less free space. */
export async function ensureFreeSpace(dir: string, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  await mkdir(dir, { recursive: true });
  const free = usableFreeBytes(await statfs(dir));
  if (free !== undefined && free < bytes) {
    throw new ResourceLimitError(`${dir}: downloading needs ${formatBytes(bytes)} but only ${formatBytes(free)} is free`, 'DISK_FULL');
  }
}

function parseRevisionInfo(body: unknown, ctx: HubContext, hub: string): RevisionInfo {
  const info = body as { sha?: unknown; siblings?: unknown } | null;
  const siblings = info?.siblings;
  if (typeof info?.sha !== 'string' || !GIT_SHA1.test(info.sha) || !Array.isArray(siblings)) {
    throw new InputError(`${ctx.repo}@${ctx.revision}: unexpected revision info from ${hub} (no commit sha or file list)`, 'HUB_RESPONSE');
  }
  const files = new Set<string>();
  const described = new Map<string, RemoteFile>();
  for (const s of siblings as { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: { sha256?: unknown; size?: unknown } }[]) {
    if (typeof s?.rfilename !== 'string') continue;
    files.add(s.rfilename);
    const etag = s.lfs ? s.lfs.sha256 : s.blobId;
    const size = s.lfs ? s.lfs.size : s.size;
    if (typeof etag === 'string' && (SHA256.test(etag) || GIT_SHA1.test(etag)) && Number.isSafeInteger(size) && (size as number) >= 0) {
      described.set(s.rfilename, { path: s.rfilename, size: size as number, etag });
    }
  }
  return { commit: info.sha, files, described };
}

/**
 * The hash that names the blob: sha256 of the bytes, or git's sha1 of "blob <size>\0" + bytes
 * (etags are checked to be one of the two where they are read).
 */
function newHasher(file: RemoteFile): Hash {
  if (SHA256.test(file.etag)) return createHash('sha256');
  const h = createHash('sha1');
  h.update(`blob ${file.size}\0`);
  return h;
}

async function hashFile(path: string, hasher: Hash): Promise<string> {
  for await (const chunk of createReadStream(path)) hasher.update(chunk as Buffer);
  return hasher.copy().digest('hex');
}

function rangeStart(res: Response): number | undefined {
  const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
  return m ? Number(m[1]) : undefined;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (!signal?.aborted) return;
  throw signal.reason instanceof ApexError ? signal.reason : new InterruptedError();
}

function networkMessage(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err?.cause?.code ?? err?.cause?.message;
  return `${err?.message ?? String(e)}${cause ? ` (${cause})` : ''}`;
}
