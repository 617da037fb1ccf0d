/**
 * Model repos for the fake Hub, built from fixtures/stories260K: the checkpoint as one
 * model.safetensors, and the same tensors split into two shards with an index (written with
 * plain Buffer code so the test does not depend on apex's writer). Each repo also carries files
 * apex must never fetch (.bin, .pth under original/, .gguf, README).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('../../fixtures', import.meta.url));
const STORIES = join(FIXTURES, 'stories260K');
const MHA = join(FIXTURES, 'llama-mha-f32');

export type RepoFiles = Record<string, Buffer>;

export function commitHash(label: string): string {
  return createHash('sha1').update(label).digest('hex');
}

/** Files apex must never request. */
export const FORBIDDEN_FILES: RepoFiles = {
  'pytorch_model.bin': Buffer.from('not really a pickle'),
  'original/consolidated.00.pth': Buffer.from('not really a torch file'),
  'model-q4_0.gguf': Buffer.from('GGUF....'),
  'README.md': Buffer.from('# tiny model\n'),
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
};

function metadataFiles(): RepoFiles {
  return {
    'config.json': readFileSync(join(STORIES, 'config.json')),
    'generation_config.json': readFileSync(join(STORIES, 'generation_config.json')),
    'tokenizer.json': readFileSync(join(MHA, 'tokenizer.json')),
    'tokenizer_config.json': readFileSync(join(MHA, 'tokenizer_config.json')),
    'special_tokens_map.json': readFileSync(join(MHA, 'special_tokens_map.json')),
  };
}

export function singleFileRepo(): RepoFiles {
  return { ...metadataFiles(), 'model.safetensors': readFileSync(join(STORIES, 'model.safetensors')), ...FORBIDDEN_FILES };
}

export function shardedRepo(): RepoFiles {
  const { shards, index } = splitIntoShards(readFileSync(join(STORIES, 'model.safetensors')), 2);
  return { ...metadataFiles(), ...shards, 'model.safetensors.index.json': Buffer.from(JSON.stringify(index, null, 2)), ...FORBIDDEN_FILES };
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Splits a safetensors file's tensors round-robin (by name) over `n` valid shard files. */
export function splitIntoShards(file: Buffer, n: number): { shards: RepoFiles; index: object } {
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, HeaderEntry>;
  const data = file.subarray(8 + headerLength);
  const names = Object.keys(header).filter((k) => k !== '__metadata__').sort();
  const shards: RepoFiles = {};
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < n; s += 1) {
    const shardName = `model-${String(s + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
    const shardHeader: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    const parts: Buffer[] = [];
    let offset = 0;
    names.forEach((name, i) => {
      if (i % n !== s) return;
      const e = header[name]!;
      const bytes = data.subarray(e.data_offsets[0], e.data_offsets[1]);
      shardHeader[name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes.length] };
      parts.push(bytes);
      offset += bytes.length;
      totalSize += bytes.length;
      weightMap[name] = shardName;
    });
    let json = JSON.stringify(shardHeader);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    shards[shardName] = Buffer.concat([len, Buffer.from(json), ...parts]);
  }
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { shards, index: { metadata: { total_size: totalSize }, weight_map: sortedMap } };
}
