/**
 * A small fake Hugging Face Hub on 127.0.0.1 (random port) for the resolver tests. It speaks the
 * endpoints the real Hub serves the Python client:
 *   GET  /api/models/<org>/<name>/revision/<rev>[?blobs=true]  commit sha + siblings
 *   GET|HEAD /<org>/<name>/resolve/<rev>/<path>   regular files directly (ETag = git sha1);
 *        LFS files as a 302 to <cdn>/cdn/<sha256>/<path> with X-Linked-Etag / X-Linked-Size
 *   GET  <cdn>/cdn/<sha256>/<path>                LFS contents, with Range support (bytes=a- and bytes=a-b)
 * where <cdn> is a second port, i.e. another origin, as the real Hub's CDN is.
 * plus private and gated repos (401/403 with X-Error-Code like the Hub) and injectable faults.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { RepoFiles } from './fixture-repos.js';

export interface FakeRepo {
  id: string;
  /** Branch and tag names → commit. */
  refs: Record<string, string>;
  /** Commit → files at that commit. */
  commits: Record<string, RepoFiles>;
  /** Needs a valid token. */
  private?: boolean;
  /** Needs a valid token whose account accepted the terms. */
  gated?: boolean;
}

export type FaultKind =
  | 'status' // answer with `status` (default 503)
  | 'stall' // accept the request and never answer
  | 'stall-body' // send headers and half the body, then go silent
  | 'truncate' // announce the full length, send half, drop the connection
  | 'short-chunked' // no length announced, send half, end cleanly
  | 'corrupt' // right length, one byte flipped
  | 'wrong-length' // announce and send 10 bytes more than the file has
  | 'path-etag' // a resolve answer whose ETag / X-Linked-Etag is a relative path, not a hash
  | 'no-range' // ignore a Range header: the whole file, 200
  | 'wrong-range-total'; // a 206 whose Content-Range gives another total size

export interface Fault {
  kind: FaultKind;
  /** Matched against the request's decoded path. */
  path: RegExp;
  method?: 'GET' | 'HEAD';
  /** How many matching requests it hits (Infinity: all of them). */
  times: number;
  status?: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  range: string | undefined;
}

const LFS = /\.(safetensors|bin|pth|gguf|model)$/;

export function gitBlobSha1(bytes: Buffer): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function isLfs(path: string): boolean {
  return LFS.test(path);
}

export class FakeHub {
  readonly requests: LoggedRequest[] = [];
  faults: Fault[] = [];
  /** When false the revision API lists file names only (like some mirrors): the client must HEAD. */
  blobsMetadata = true;
  /** Token → whether its account may read gated repos. */
  readonly tokens = new Map<string, { gatedAccess: boolean }>();
  private readonly repos = new Map<string, FakeRepo>();
  private readonly sockets = new Set<Socket>();
  private servers: Server[] = [];
  url = '';
  cdnUrl = '';

  constructor(repos: FakeRepo[]) {
    for (const r of repos) this.repos.set(r.id, r);
  }

  async start(): Promise<this> {
    this.url = await this.listen();
    this.cdnUrl = await this.listen();
    return this;
  }

  private async listen(): Promise<string> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    this.servers.push(server);
    const addr = server.address();
    return `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((server) => new Promise<void>((ok) => server.close(() => ok()))));
  }

  /** Requests whose path contains `part`. */
  requestsFor(part: string): LoggedRequest[] {
    return this.requests.filter((r) => r.path.includes(part));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(url.pathname);
    const auth = req.headers.authorization;
    this.requests.push({ method: req.method ?? 'GET', path, authorization: auth, range: req.headers.range });
    const fault = this.takeFault(req.method ?? 'GET', path);
    if (fault?.kind === 'stall') return;
    if (fault?.kind === 'status') return this.error(res, fault.status ?? 503, 'ServerError', 'try again');

    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path);
    if (m) {
      const found = this.authorize(res, m[1]!, auth, m[2]!);
      if (!found) return;
      const { repo, commit } = found;
      const withBlobs = url.searchParams.get('blobs') === 'true' && this.blobsMetadata;
      const siblings = Object.entries(repo.commits[commit]!).map(([name, bytes]) => {
        if (!withBlobs) return { rfilename: name };
        const lfs = isLfs(name) ? { sha256: sha256(bytes), size: bytes.length, pointerSize: 134 } : undefined;
        return { rfilename: name, blobId: gitBlobSha1(bytes), size: bytes.length, ...(lfs ? { lfs } : {}) };
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ id: repo.id, sha: commit, siblings }));
      return;
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m) {
      const found = this.authorize(res, m[1]!, auth, m[2]!);
      if (!found) return;
      const bytes = found.repo.commits[found.commit]![m[3]!];
      if (!bytes) return this.error(res, 404, 'EntryNotFound', `${m[3]} does not exist`);
      const common = { 'X-Repo-Commit': found.commit };
      const etag = (hash: string) => (fault?.kind === 'path-etag' ? '"../../../escaped-blob"' : `"${hash}"`);
      if (isLfs(m[3]!)) {
        res.writeHead(302, {
          ...common,
          Location: `${this.cdnUrl}/cdn/${sha256(bytes)}/${m[3]}`,
          'X-Linked-Etag': etag(sha256(bytes)),
          'X-Linked-Size': String(bytes.length),
        });
        res.end();
        return;
      }
      return this.send(req, res, bytes, { ...common, ETag: etag(gitBlobSha1(bytes)) }, fault);
    }
    m = /^\/cdn\/([0-9a-f]{64})\/(.+)$/.exec(path);
    if (m) {
      for (const repo of this.repos.values()) {
        for (const files of Object.values(repo.commits)) {
          const bytes = files[m[2]!];
          if (bytes && sha256(bytes) === m[1]) return this.send(req, res, bytes, { ETag: `"${m[1]}"` }, fault);
        }
      }
    }
    this.error(res, 404, 'EntryNotFound', 'no such path');
  }

  private takeFault(method: string, path: string): Fault | undefined {
    const f = this.faults.find((x) => x.times > 0 && x.path.test(path) && (x.method ?? method) === method);
    if (f) f.times -= 1;
    return f;
  }

  /** Applies the Hub's access rules; answers the error itself and returns undefined on refusal. */
  private authorize(res: ServerResponse, id: string, auth: string | undefined, revision: string): { repo: FakeRepo; commit: string } | undefined {
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const account = token !== undefined ? this.tokens.get(token) : undefined;
    if (token !== undefined && !account) {
      this.error(res, 401, '', 'Invalid credentials in Authorization header');
      return undefined;
    }
    const repo = this.repos.get(id);
    if (!repo || (repo.private && !account)) {
      this.error(res, account ? 404 : 401, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    if (repo.gated && !account) {
      this.error(res, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it and be authenticated to access it.`);
      return undefined;
    }
    if (repo.gated && !account!.gatedAccess) {
      this.error(res, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list.`);
      return undefined;
    }
    const commit = repo.refs[revision] ?? (repo.commits[revision] ? revision : undefined);
    if (!commit) {
      this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      return undefined;
    }
    return { repo, commit };
  }

  private error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'Content-Type': 'application/json', ...(code ? { 'X-Error-Code': code } : {}), 'X-Error-Message': message });
    res.end(JSON.stringify({ error: message }));
  }

  /** Serves file bytes (with Range support), bent by `fault` when one applies. */
  private send(req: IncomingMessage, res: ServerResponse, bytes: Buffer, headers: Record<string, string>, fault: Fault | undefined): void {
    let body = bytes;
    let status = 200;
    const range = fault?.kind === 'no-range' ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      if (start >= bytes.length) return this.error(res, 416, '', 'range not satisfiable');
      const end = range[2] === '' ? bytes.length - 1 : Math.min(Number(range[2]), bytes.length - 1);
      body = bytes.subarray(start, end + 1);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${bytes.length + (fault?.kind === 'wrong-range-total' ? 1 : 0)}`;
    }
    const half = body.subarray(0, Math.floor(body.length / 2));
    switch (fault?.kind) {
      case 'stall-body':
        res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
        res.write(half);
        return;
      case 'truncate':
        res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
        res.write(half, () => res.destroy());
        return;
      case 'short-chunked':
        res.writeHead(status, headers);
        res.end(half);
        return;
      case 'corrupt': {
        const bad = Buffer.from(body);
        bad[bad.length >> 1] ^= 0x01;
        body = bad;
        break;
      }
      case 'wrong-length':
        body = Buffer.concat([body, Buffer.alloc(10, 0x20)]);
        break;
      default:
        break;
    }
    res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
