/**
 * A dry run's view of Hub weight files it does not download: each file's safetensors header,
 * read over HTTP with two Range requests (the first bytes, holding the 8-byte header length,
 * then the header) and validated exactly as the local reader validates a file on disk
 * (checkHeaderLength, parseHeader: the same SafetensorsFormatError rules, against the size the
 * Hub lists), plus the file's size and sha256 (the LFS oid the Hub gives, which is the sha256
 * of the file's bytes: what `sha256OfFile` would compute after the download, which checks the
 * bytes against it). Checkpoint.open builds a header-only checkpoint from these.
 */
import { checkHeaderLength, parseHeader, type SafetensorsHeader } from './safetensors-reader.js';
import { formatBytes, type HubClient, type HubContext, type RemoteFile } from './hub-download.js';

/** How many of a file's first bytes the first request asks for (as many as the local reader looks at). */
const PREFIX_BYTES = 64;

export interface RemoteWeightFile {
  /** File name in the repo (and in the snapshot folder, once downloaded). */
  readonly file: string;
  /** How messages name it: `<repo>@<revision>/<file>`. */
  readonly name: string;
  readonly bytes: number;
  /** sha256 of the file's bytes (its LFS oid on the Hub). */
  readonly sha256: string;
  readonly header: SafetensorsHeader;
}

/** The weight files of a Hub model that a dry run read the headers of instead of downloading. */
export interface RemoteWeights {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  readonly hubUrl: string;
  readonly files: readonly RemoteWeightFile[];
  /** Sum of the files' sizes: what the run would download. */
  readonly bytes: number;
  /** Bytes actually received for the headers. */
  readonly headerBytes: number;
}

/** Reads and validates the safetensors header of `file` (an LFS file: `etag` its sha256). */
export async function readRemoteHeader(
  client: HubClient,
  ctx: HubContext,
  commit: string,
  file: RemoteFile,
): Promise<{ weight: RemoteWeightFile; received: number }> {
  const name = `${ctx.repo}@${ctx.revision}/${file.path}`;
  const prefix = await client.readRange(ctx, commit, file, 0, Math.min(file.size, PREFIX_BYTES));
  const headerLength = checkHeaderLength(name, prefix, file.size);
  const rest = 8 + headerLength <= prefix.length ? prefix.subarray(8, 8 + headerLength) : await client.readRange(ctx, commit, file, 8, headerLength);
  const header = parseHeader(name, rest, file.size);
  const received = prefix.length + (rest.buffer === prefix.buffer ? 0 : rest.length);
  return { weight: { file: file.path, name, bytes: file.size, sha256: file.etag, header }, received };
}

/** What a dry run's --json says about weights it left on the Hub: what the run would download. */
export interface WeightsToDownload {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  /** The weight files whose headers were read instead, with their sizes. */
  readonly files: readonly { readonly file: string; readonly bytes: number }[];
  /** Bytes the run would download (the files' sizes summed). */
  readonly bytes: number;
  /** Bytes the dry run received for the headers. */
  readonly headerBytes: number;
}

/** null when every weight file is local (a folder, or complete in the cache). */
export function weightsToDownload(remote: RemoteWeights | undefined): WeightsToDownload | null {
  if (remote === undefined || remote.files.length === 0) return null;
  return {
    repo: remote.repo,
    revision: remote.revision,
    commit: remote.commit,
    files: remote.files.map((f) => ({ file: f.file, bytes: f.bytes })),
    bytes: remote.bytes,
    headerBytes: remote.headerBytes,
  };
}

/** The dry run's line about it, e.g. "dry run: read the headers of 4 weight files … from the Hub; 14.9 GB not downloaded (the run downloads them)". */
export function describeWeightsToDownload(d: WeightsToDownload): string {
  const n = d.files.length;
  return `dry run: read the headers of ${n} weight file${n === 1 ? '' : 's'} of ${d.repo}@${d.revision} from the Hub (${formatBytes(d.headerBytes)}); ${formatBytes(d.bytes)} not downloaded (the run downloads ${n === 1 ? 'it' : 'them'})`;
}
