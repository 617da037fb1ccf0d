/**
 * What an analysis was computed from, recorded so a reader (or a later stage) can tell whether
 * a score file belongs to a checkpoint: the model's shape and sha256 fingerprints of its files
 * (config.json, the shard index of a sharded checkpoint and every weight file), of its tokenizer,
 * generation and chat-template files apart (provenance, not the fingerprint), and apex's version. A weight file a dry run did not download
 * (Checkpoint.remoteFiles) is fingerprinted by the sha256 the Hub gives for it (its LFS oid),
 * which is the sha256 of its bytes, as sha256OfFile would compute it.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { refuseDevice } from '../io/bounded-read.js';
import { join } from 'node:path';
import { INDEX_FILE, type Checkpoint } from '../io/checkpoint.js';
import { listModelFiles } from '../io/model-files.js';
import type { ModelSpec } from '../model/model-spec.js';
import { packageRoot } from '../train/data-corpus.js';
import { apexBuild } from '../util/apex-build.js';

export interface FileFingerprint {
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface ModelRecord {
  /** The resolved local folder. */
  readonly path: string;
  readonly architecture: string;
  readonly config: Pick<ModelSpec, 'numLayers' | 'hiddenSize' | 'numHeads' | 'numKvHeads' | 'headDim' | 'intermediateSize' | 'vocabSize' | 'tieWordEmbeddings'>;
  /** Stored dtype(s) of the layer weights, e.g. ["BF16"]. */
  readonly dtypes: string[];
  readonly parameters: number;
  /**
   * `weights`: config.json, the shard index (if any) and every weight file are hashed. `index`
   * (records of versions before 2026-11-27): a sharded model's weights were not hashed, only
   * config.json and its index, so a fine-tuned copy with the same layout looked the same.
   */
  readonly fingerprint: 'index' | 'weights';
  readonly files: FileFingerprint[];
  /**
   * The folder's other model files (generation config, tokenizer files, chat template) and their
   * sha256: provenance only, not part of the fingerprint `files` make (records before 2026-11-28
   * lack it). The data's token ids depend on them.
   */
  readonly otherFiles?: FileFingerprint[];
}

export async function sha256OfFile(path: string, signal?: AbortSignal): Promise<FileFingerprint> {
  await refuseDevice(path, "apex hashes the model's files for its records");
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) {
    signal?.throwIfAborted();
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { file: path, bytes, sha256: hash.digest('hex') };
}

export async function modelRecord(checkpoint: Checkpoint, spec: ModelSpec, signal?: AbortSignal): Promise<ModelRecord> {
  const names = ['config.json', ...(checkpoint.index !== undefined ? [INDEX_FILE] : []), ...checkpoint.shardFiles];
  const files: FileFingerprint[] = [];
  for (const name of names) {
    // A weight file a dry run left on the Hub: its LFS sha256, the sha256 of its bytes.
    const remote = checkpoint.remoteFiles.get(name);
    const fp = remote ? { bytes: remote.bytes, sha256: remote.sha256 } : await sha256OfFile(join(checkpoint.dir, name), signal);
    files.push({ ...fp, file: name });
  }
  const otherFiles: FileFingerprint[] = [];
  for (const name of (await listModelFiles(checkpoint.dir)).filter((f) => f !== 'config.json')) {
    otherFiles.push({ ...(await sha256OfFile(join(checkpoint.dir, name), signal)), file: name });
  }
  const dtypes = [...new Set(checkpoint.tensors().map((t) => t.dtype))].sort();
  const parameters = checkpoint.tensors().reduce((n, t) => n + t.shape.reduce((p, d) => p * d, 1), 0);
  return {
    path: checkpoint.dir,
    architecture: spec.architecture,
    config: {
      numLayers: spec.numLayers,
      hiddenSize: spec.hiddenSize,
      numHeads: spec.numHeads,
      numKvHeads: spec.numKvHeads,
      headDim: spec.headDim,
      intermediateSize: spec.intermediateSize,
      vocabSize: spec.vocabSize,
      tieWordEmbeddings: spec.tieWordEmbeddings,
    },
    dtypes,
    parameters,
    fingerprint: 'weights',
    files,
    otherFiles,
  };
}

/**
 * apex's version from its package.json, with the build as semver build metadata
 * (`0.1.0+3f2a9c1b7d4e`, util/apex-build.ts): records then tell two builds of one version apart.
 */
export function apexVersion(): string {
  const { version } = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return `${version}+${apexBuild()}`;
}
