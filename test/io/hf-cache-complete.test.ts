// Whether a cached snapshot can be loaded without the network must follow what Checkpoint.open
// reads: model.safetensors when the folder has it (an index beside it ignored), else the index
// and every shard it lists.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isCompleteCheckpoint } from '../../src/io/hf-cache.js';

async function folder(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'apex-complete-'));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const INDEX = JSON.stringify({ metadata: { total_size: 8 }, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } });

describe('isCompleteCheckpoint', () => {
  it('model.safetensors beside an index whose shards are absent is complete (it is what is read)', async () => {
    expect(await isCompleteCheckpoint(await folder({ 'config.json': '{}', 'model.safetensors': 'x', 'model.safetensors.index.json': INDEX }))).toBe(true);
  });
  it('an index with a shard missing and no model.safetensors is not; with every shard it is', async () => {
    expect(await isCompleteCheckpoint(await folder({ 'config.json': '{}', 'model.safetensors.index.json': INDEX, 'model-00001-of-00002.safetensors': 'x' }))).toBe(false);
    expect(await isCompleteCheckpoint(await folder({ 'config.json': '{}', 'model.safetensors.index.json': INDEX, 'model-00001-of-00002.safetensors': 'x', 'model-00002-of-00002.safetensors': 'x' }))).toBe(true);
  });
});
