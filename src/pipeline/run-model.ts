/**
 * The base model of a run: the config's `model` resolved to a local folder (a folder, the
 * Hugging Face cache or a download; src/io/resolve-model.ts), checked to be a model apex can
 * train, and fingerprinted with the sha256 of its config, tokenizer and generation files and of
 * every weight file, so summary.json says exactly what was trained, and a resumed run notices any
 * of them changed (the tokenizer decides the data's tokens; the fused checkpoints copy them).
 * A dry run resolves a Hub model with `weights: 'headers'` (resolve-model.ts): weight files not
 * in the cache are then described by their headers and fingerprinted by the Hub's sha256.
 */
import { join } from 'node:path';
import { Checkpoint, INDEX_FILE } from '../io/checkpoint.js';
import { listModelFiles } from '../io/model-files.js';
import { resolveModel, type ResolvedModel } from '../io/resolve-model.js';
import type { ModelSpec } from '../model/model-spec.js';
import { describeCheckpoint } from '../model/weight-source.js';
import { sha256OfFile } from './analysis-provenance.js';
import type { BaseModelRecord } from './run-summary.js';

export interface ResolvedBaseModel {
  readonly argument: string;
  readonly resolved: ResolvedModel;
  readonly dir: string;
  readonly spec: ModelSpec;
  readonly parameters: number;
  readonly files: readonly string[];
}

/** Resolves the model and reads its spec (refusing what the runtime does not support). */
export async function resolveBaseModel(
  argument: string,
  options: { signal?: AbortSignal; progress?: (m: string) => void; weights?: 'download' | 'headers' },
): Promise<ResolvedBaseModel> {
  const resolved = await resolveModel(argument, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.progress ? { progress: options.progress } : {}),
    ...(options.weights ? { weights: options.weights } : {}),
  });
  const checkpoint = await Checkpoint.open(resolved.dir, resolved.remoteWeights ? { remoteWeights: resolved.remoteWeights } : {});
  try {
    const { spec } = describeCheckpoint(checkpoint);
    const parameters = checkpoint.tensors().reduce((n, t) => n + t.shape.reduce((p, d) => p * d, 1), 0);
    const files = [...(await listModelFiles(resolved.dir)), ...(checkpoint.index !== undefined ? [INDEX_FILE] : []), ...checkpoint.shardFiles];
    return { argument, resolved, dir: resolved.dir, spec, parameters, files };
  } finally {
    await checkpoint.close();
  }
}

/**
 * The record of the base model with the sha256 of its files. Every file is read again on every
 * invocation: a model replaced by one of the same size with its modification time kept (`cp -p`,
 * `rsync -a`, tar) would pass a size-and-time check.
 */
export async function baseModelRecord(base: ResolvedBaseModel, options: { signal?: AbortSignal; progress?: (m: string) => void }): Promise<BaseModelRecord> {
  const hashedAt = new Date();
  const files = [];
  const remote = new Map((base.resolved.remoteWeights?.files ?? []).map((f) => [f.file, f]));
  for (const name of base.files) {
    // A weight file a dry run left on the Hub: the sha256 the Hub gives, that of its bytes.
    const r = remote.get(name);
    if (r) {
      files.push({ file: name, bytes: r.bytes, sha256: r.sha256 });
      continue;
    }
    options.progress?.(`hashing ${name}`);
    const fp = await sha256OfFile(join(base.dir, name), options.signal);
    files.push({ file: name, bytes: fp.bytes, sha256: fp.sha256 });
  }
  const r = base.resolved;
  return {
    argument: base.argument,
    path: base.dir,
    source: r.source,
    ...(r.repo !== undefined ? { repo: r.repo } : {}),
    ...(r.revision !== undefined ? { revision: r.revision } : {}),
    ...(r.commit !== undefined ? { commit: r.commit } : {}),
    parameters: base.parameters,
    hashedAt: hashedAt.toISOString(),
    files,
  };
}
