/**
 * A checkpoint of the right layout whose data is a hole (config.json and a BF16 safetensors
 * file with a header and a sparse body), for tests of refusals that happen before weights are
 * read: a ~96M-parameter model costs a few kilobytes on disk.
 */
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { llamaConfig, type RandomModelShape } from '../../bench/random-checkpoint.js';
import { expectedTensors } from '../../src/model/architecture.js';
import { parseModelConfig } from '../../src/model/config.js';

/** The ~96M "medium" shape of scripts/memory-estimates.ts. */
export const MEDIUM_SHAPE: RandomModelShape = { layers: 10, hidden: 768, heads: 12, kvHeads: 12, intermediate: 2048, vocab: 16000 };

export function writeSparseCheckpoint(dir: string, shape: RandomModelShape = MEDIUM_SHAPE): void {
  mkdirSync(dir, { recursive: true });
  const config = llamaConfig(shape);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, dims] of expectedTensors(parseModelConfig(config, dir))) {
    const bytes = 2 * dims.reduce((p, d) => p * d, 1);
    header[name] = { dtype: 'BF16', shape: dims, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  try {
    writeSync(fd, prefix);
    writeSync(fd, Buffer.from(json, 'utf8'));
    ftruncateSync(fd, 8 + json.length + offset);
  } finally {
    closeSync(fd);
  }
}
