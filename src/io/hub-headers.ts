/**
 * A dry run's view of Hub weight files it does not download: each file's safetensors header,
 * read over HTTP with Range requests (the first bytes, holding the 8-byte header length and, on
 * most files, the whole header; then the rest of the header when it is longer) and validated
 * exactly as the local reader validates a file on disk
 * (checkHeaderLength, parseHeader: the same SafetensorsFormatError rules, against the size the
 * Hub lists), plus the file's size and sha256 (the LFS oid the Hub gives, which is the sha256
 * of the file's bytes: what `sha256OfFile` would compute after the download, which checks the
 * bytes against it). Checkpoint.open builds a header-only checkpoint from these.
 */
import { checkHeaderLength, parseHeader, type SafetensorsHeader } from './safetensors-reader.js';
import { formatBytes, type HubClient, type HubContext, type RemoteFile } from './hub-download.js';

/**
 * How many of a file's first bytes the first request asks for: enough for the whole header of
 * most checkpoints' files (about 100 bytes per tensor: a 7B model's shards hold 20–40 KiB), so a
 * shard costs one round trip instead of two, but never more than 1/64 of the file past its
 * header (small files) and at least the 8-byte length plus a little.
 */
export function firstRequestBytes(fileSize: number): number {
  return Math.min(fileSize, Math.max(64, Math.min(64 * 1024, Math.floor(fileSize / 64))));
}

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
  const prefix = await client.readRange(ctx, commit, file, 0, firstRequestBytes(file.size));
  const headerLength = checkHeaderLength(name, prefix, file.size);
  let rest: Uint8Array;
  let received = prefix.length;
  if (8 + headerLength <= prefix.length) {
    rest = prefix.subarray(8, 8 + headerLength);
  } else {
    // Only the part of the header the first answer did not hold.
    const tail = await client.readRange(ctx, commit, file, prefix.length, 8 + headerLength - prefix.length);
    received += tail.length;
    rest = new Uint8Array(headerLength);
    rest.set(prefix.subarray(8));
    rest.set(tail, prefix.length - 8);
  }
  const header = parseHeader(name, rest, file.size);
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
