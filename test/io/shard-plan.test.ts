import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { formatBytes, parseByteSize } from '../../src/io/byte-size.js';
import { indexJson, keepLayout, naturalCompare, planShards } from '../../src/io/shard-plan.js';

describe('parseByteSize', () => {
  it.each([
    ['5GB', 5_000_000_000],
    ['500MB', 500_000_000],
    ['1.5GB', 1_500_000_000],
    ['8GiB', 8 * 2 ** 30],
    ['512MiB', 512 * 2 ** 20],
    ['2kb', 2000],
    ['1024', 1024],
    [' 3 TB ', 3e12],
  ])('%s', (text, bytes) => expect(parseByteSize(text)).toBe(bytes));

  it.each(['', 'GB', '5 XB', '-1GB', '0', '1e3MB', '9999999PB'])('rejects %j with a usage error naming the flag', (text) => {
    expect(() => parseByteSize(text, '--max-shard-size')).toThrow(UsageError);
    expect(() => parseByteSize(text, '--max-shard-size')).toThrow(/--max-shard-size/);
  });

  it('formats decimal units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(2_200_000_000)).toBe('2.20 GB');
    expect(formatBytes(131_072_000)).toBe('131 MB');
  });
});

describe('planShards', () => {
  const t = (name: string, n: number) => ({ name, dtype: 'U8' as const, shape: [n] });

  it('orders names naturally', () => {
    expect(['layers.10.a', 'layers.2.a', 'layers.1.b', 'embed'].sort(naturalCompare)).toEqual(['embed', 'layers.1.b', 'layers.2.a', 'layers.10.a']);
  });

  it('fills shards up to the limit, gives an oversized tensor its own shard, names them i-of-N', () => {
    const plan = planShards([t('layers.10.x', 40), t('layers.2.x', 60), t('embed', 30), t('huge', 500), t('layers.3.x', 10)], 100);
    expect(plan.files.map((f) => f.tensors)).toEqual([['embed'], ['huge'], ['layers.2.x', 'layers.3.x'], ['layers.10.x']]);
    expect(plan.files.map((f) => f.file)).toEqual([1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`));
    expect(plan.indexed).toBe(true);
    expect(plan.files.map((f) => f.bytes)).toEqual([30, 500, 70, 40]);
    expect(plan.totalBytes).toBe(640);
  });

  it('one shard is model.safetensors with no index', () => {
    const plan = planShards([t('a', 10), t('b', 10)], 1000);
    expect(plan.files.map((f) => f.file)).toEqual(['model.safetensors']);
    expect(plan.indexed).toBe(false);
    expect(planShards([t('a', 10)]).files[0]!.file).toBe('model.safetensors');
  });

  it('keeps a layout: same files, same map, input file order', () => {
    const layout = new Map([['a', 'f2.safetensors'], ['b', 'f1.safetensors'], ['c', 'f2.safetensors']]);
    const plan = keepLayout([t('a', 1), t('b', 2), t('c', 3)], layout, ['f1.safetensors', 'f2.safetensors'], true);
    expect(plan.files.map((f) => [f.file, f.tensors])).toEqual([['f1.safetensors', ['b']], ['f2.safetensors', ['a', 'c']]]);
    expect(() => keepLayout([t('new', 1)], layout, ['f1.safetensors'], true)).toThrow(/no file in the input layout/);
  });

  it('writes the index with total_size and a sorted weight_map', () => {
    const plan = planShards([t('b', 70), t('a', 50), t('c', 40)], 100);
    const index = JSON.parse(indexJson(plan));
    expect(index.metadata).toEqual({ total_size: 160 });
    expect(Object.keys(index.weight_map)).toEqual(['a', 'b', 'c']);
    expect(index.weight_map).toEqual({ a: 'model-00001-of-00003.safetensors', b: 'model-00002-of-00003.safetensors', c: 'model-00003-of-00003.safetensors' });
  });
});
