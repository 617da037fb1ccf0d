/**
 * A corpus of malformed safetensors files, each written to disk and opened: every one must
 * fail with its own rule and exit code 3, never crash, hang or allocate for a bogus size.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFormatError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { rawSafetensors, tempDir } from './helpers.js';

const dir = await tempDir('apex-malformed-');
const enc = (s: string) => new TextEncoder().encode(s);
const f32Entry = (name: string, shape: number[], begin: number, end: number) => `"${name}":{"dtype":"F32","shape":${JSON.stringify(shape)},"data_offsets":[${begin},${end}]}`;
const valid1 = `{${f32Entry('a', [2], 0, 8)}}`;

interface Case {
  name: string;
  bytes: Uint8Array;
  rule: string;
  tensor?: string;
}

const cases: Case[] = [
  { name: 'empty file', bytes: new Uint8Array(0), rule: 'header-too-small' },
  { name: '7-byte file', bytes: new Uint8Array(7), rule: 'header-too-small' },
  { name: 'header length 2^63', bytes: rawSafetensors('{}', undefined, 1n << 63n), rule: 'header-too-large' },
  { name: 'header length 100 MB + 1', bytes: rawSafetensors('{}', undefined, 100_000_001n), rule: 'header-too-large' },
  { name: 'header length beyond end of file', bytes: rawSafetensors('{}', undefined, 5000n), rule: 'header-length' },
  { name: 'zero header length', bytes: rawSafetensors(''), rule: 'header-start' },
  { name: 'not JSON', bytes: rawSafetensors('{"a": {"dtype": "F32", '), rule: 'header-json' },
  { name: 'JSON followed by garbage', bytes: rawSafetensors('{} x'), rule: 'header-json' },
  { name: 'not UTF-8', bytes: rawSafetensors(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])), rule: 'header-utf8' },
  { name: 'header is a JSON array', bytes: rawSafetensors('[1,2,3]'), rule: 'header-start' },
  { name: 'UTF-8 byte order mark before the header', bytes: rawSafetensors(`\ufeff${valid1}`, new Uint8Array(8)), rule: 'header-start' },
  { name: 'Git LFS pointer', bytes: enc('version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n'), rule: 'git-lfs-pointer' },
  { name: 'HTML page', bytes: enc('<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not found</body></html>\n'), rule: 'html-page' },
  { name: 'JSON error body', bytes: enc('{"error":"Repository not found"}'), rule: 'json-document' },
  { name: 'duplicate tensor names', bytes: rawSafetensors(`{${f32Entry('a', [1], 0, 4)},${f32Entry('a', [1], 4, 8)}}`, new Uint8Array(8)), rule: 'duplicate-key', tensor: 'a' },
  { name: 'duplicate key inside an entry', bytes: rawSafetensors('{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)), rule: 'duplicate-key', tensor: 'a' },
  { name: 'overlapping offsets', bytes: rawSafetensors(`{${f32Entry('a', [2], 0, 8)},${f32Entry('b', [2], 4, 12)}}`, new Uint8Array(12)), rule: 'offsets-overlap', tensor: 'b' },
  { name: 'gap between tensors', bytes: rawSafetensors(`{${f32Entry('a', [1], 0, 4)},${f32Entry('b', [1], 8, 12)}}`, new Uint8Array(12)), rule: 'offsets-gap', tensor: 'b' },
  { name: 'first tensor not at offset 0', bytes: rawSafetensors(`{${f32Entry('a', [1], 4, 8)}}`, new Uint8Array(8)), rule: 'offsets-gap', tensor: 'a' },
  { name: 'shape product overflows', bytes: rawSafetensors(`{${f32Entry('a', [4503599627370496, 4503599627370496], 0, 8)}}`, new Uint8Array(8)), rule: 'shape-overflow', tensor: 'a' },
  { name: 'sub-byte tensor ending mid-byte', bytes: rawSafetensors('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', new Uint8Array(2)), rule: 'misaligned-slice', tensor: 'a' },
  { name: 'negative dimension', bytes: rawSafetensors(`{${f32Entry('a', [-2], 0, 8)}}`, new Uint8Array(8)), rule: 'tensor-shape', tensor: 'a' },
  { name: 'fractional dimension', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}', new Uint8Array(8)), rule: 'tensor-shape', tensor: 'a' },
  { name: 'integer written as 2.0', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', new Uint8Array(8)), rule: 'number-format', tensor: 'a' },
  { name: 'offset written with an exponent', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}', new Uint8Array(8)), rule: 'number-format', tensor: 'a' },
  { name: 'negative offset', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[0],"data_offsets":[-4,-4]}}'), rule: 'tensor-offsets', tensor: 'a' },
  { name: 'end before begin', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}', new Uint8Array(8)), rule: 'tensor-offsets', tensor: 'a' },
  { name: 'data_offsets with three numbers', bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', new Uint8Array(4)), rule: 'tensor-offsets', tensor: 'a' },
  { name: 'size does not match shape', bytes: rawSafetensors(`{${f32Entry('a', [4], 0, 12)}}`, new Uint8Array(12)), rule: 'tensor-size', tensor: 'a' },
  { name: 'trailing bytes after the last tensor', bytes: rawSafetensors(valid1, new Uint8Array(12)), rule: 'trailing-bytes' },
  { name: 'truncated data', bytes: rawSafetensors(valid1, new Uint8Array(5)), rule: 'truncated', tensor: 'a' },
  { name: 'tensor claims a terabyte of a tiny file', bytes: rawSafetensors('{"a":{"dtype":"U8","shape":[1000000000000],"data_offsets":[0,1000000000000]}}', new Uint8Array(4)), rule: 'truncated', tensor: 'a' },
  { name: 'unknown dtype', bytes: rawSafetensors('{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', new Uint8Array(16)), rule: 'tensor-dtype', tensor: 'a' },
  { name: 'dtype not a string', bytes: rawSafetensors('{"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)), rule: 'tensor-dtype', tensor: 'a' },
  { name: 'shape missing', bytes: rawSafetensors('{"a":{"dtype":"F32","data_offsets":[0,4]}}', new Uint8Array(4)), rule: 'tensor-shape', tensor: 'a' },
  { name: 'tensor entry not an object', bytes: rawSafetensors('{"a":[1,2,3]}'), rule: 'tensor-entry', tensor: 'a' },
  { name: 'non-string metadata value', bytes: rawSafetensors(`{"__metadata__":{"format":"pt","step":5},${f32Entry('a', [2], 0, 8)}}`, new Uint8Array(8)), rule: 'metadata-type' },
  { name: '__metadata__ as a tensor-like entry', bytes: rawSafetensors(`{"__metadata__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(4)), rule: 'metadata-type' },
  { name: '__metadata__ is an array', bytes: rawSafetensors('{"__metadata__":["pt"]}'), rule: 'metadata-type' },
  { name: 'tensor name with an unpaired surrogate escape', bytes: rawSafetensors(`{${f32Entry('\\ud800', [2], 0, 8)}}`, new Uint8Array(8)), rule: 'header-json' },
  { name: 'metadata value with an unpaired surrogate escape', bytes: rawSafetensors('{"__metadata__":{"format":"\\udfff"}}'), rule: 'header-json' },
  { name: 'deeply nested JSON', bytes: rawSafetensors(`{"a":${'['.repeat(50000)}${']'.repeat(50000)}}`), rule: 'tensor-entry', tensor: 'a' },
];

describe('malformed safetensors corpus', () => {
  it('has at least 25 distinct files covering at least 20 rules', () => {
    expect(cases.length).toBeGreaterThanOrEqual(25);
    expect(new Set(cases.map((c) => c.rule)).size).toBeGreaterThanOrEqual(20);
  });

  it.each(cases.map((c, i) => [c.name, i] as const))('%s', async (_name, i) => {
    const c = cases[i]!;
    const path = join(dir, `case-${i}.safetensors`);
    await writeFile(path, c.bytes);
    const err = await SafetensorsFile.open(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SafetensorsFormatError);
    const e = err as SafetensorsFormatError;
    expect({ rule: e.rule, exit: e.exit, code: e.code }).toEqual({ rule: c.rule, exit: 3, code: 'SAFETENSORS_FORMAT' });
    if (c.tensor !== undefined) expect(e.tensor).toBe(c.tensor);
    expect(e.message).toContain(path);
    expect(e.message).toContain(c.rule);
  });

  it('accepts what the rules allow: JSON whitespace around the header, empty tensors, no tensors', async () => {
    const ok = [
      rawSafetensors(` \n\t${valid1}\r\n  `, new Uint8Array(8)),
      rawSafetensors('{"e":{"dtype":"BF16","shape":[0,4],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}', new Uint8Array(1)),
      rawSafetensors('{"__metadata__":{"format":"pt"}}'),
      rawSafetensors(`{"__metadata__":null,${f32Entry('a', [2], 0, 8)}}`, new Uint8Array(8)),
      rawSafetensors(`{${f32Entry('\\ud83d\\ude00 paired', [2], 0, 8)}}`, new Uint8Array(8)),
      rawSafetensors('{"a":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}}', new Uint8Array(3)),
    ];
    for (const [i, bytes] of ok.entries()) {
      const path = join(dir, `ok-${i}.safetensors`);
      await writeFile(path, bytes);
      const f = await SafetensorsFile.open(path);
      await f.close();
    }
  });
});
