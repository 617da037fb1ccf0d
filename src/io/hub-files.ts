/**
 * Which files of a Hub model repo apex fetches: config, generation config, tokenizer files and
 * chat template, then the safetensors weights (the index and the shards it lists, or the single
 * model.safetensors). Everything else — PyTorch `.bin`/`.pth`, `original/`, GGUF, images, READMEs
 * — is never requested. Selection is an allow-list, and shard names taken from an index are
 * checked so that an index cannot pull in other files or paths outside the snapshot.
 */
import { InputError } from '../errors.js';
import { INDEX_FILE, SINGLE_FILE } from './checkpoint.js';
import { MODEL_FILES } from './model-files.js';

/**
 * Small files fetched when the repo has them (config.json is required): exactly the non-weight
 * files a rewritten checkpoint carries over, so a downloaded model can be expanded completely.
 */
export const METADATA_FILES = MODEL_FILES;

/** A plain file name in the repo root ending in .safetensors (no folders, no hidden files). */
const SHARD_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors$/;

/** 'index': fetch INDEX_FILE, then the shards it lists; 'single': fetch SINGLE_FILE. */
export type WeightsLayout = 'index' | 'single';

/** The metadata files present in the repo, in METADATA_FILES order. */
export function metadataFilesIn(repoFiles: ReadonlySet<string>, repo: string): string[] {
  if (!repoFiles.has('config.json')) {
    throw new InputError(`${repo}: the repo has no config.json, so it is not a Hugging Face transformers checkpoint`, 'NO_CONFIG');
  }
  return METADATA_FILES.filter((f) => repoFiles.has(f));
}

/** How the repo stores its safetensors weights; refuses repos that only have other formats. */
export function weightsLayout(repoFiles: ReadonlySet<string>, repo: string): WeightsLayout {
  // As transformers: model.safetensors first, the index only without it.
  if (repoFiles.has(SINGLE_FILE)) return 'single';
  if (repoFiles.has(INDEX_FILE)) return 'index';
  const other = [...repoFiles].filter((f) => /\.(bin|pth|pt|gguf)$/.test(f)).slice(0, 5);
  throw new InputError(
    `${repo}: the repo has neither ${INDEX_FILE} nor ${SINGLE_FILE}` +
      (other.length ? ` (it has ${other.join(', ')}; apex reads only safetensors weights)` : ''),
    'NO_WEIGHTS',
  );
}

/** The distinct shard files a parsed model.safetensors.index.json lists, sorted. */
export function shardFilesOfIndex(index: unknown): string[] {
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (!weightMap || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new InputError(`${INDEX_FILE}: no weight_map object`, 'INDEX_FORMAT');
  }
  const shards = new Set<string>();
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (typeof file !== 'string' || !SHARD_NAME.test(file)) {
      throw new InputError(`${INDEX_FILE}: tensor '${tensor}' maps to ${JSON.stringify(file)}, which is not a .safetensors file name in the repo root`, 'INDEX_FORMAT');
    }
    shards.add(file);
  }
  if (shards.size === 0) throw new InputError(`${INDEX_FILE}: weight_map is empty`, 'INDEX_FORMAT');
  return [...shards].sort();
}
