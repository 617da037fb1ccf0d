/**
 * Seeded mutation fuzzer for the safetensors reader and the shard-index reader. Mutations:
 * bit flips, interesting bytes, header-length edits, truncation, extension, insertion and
 * deletion inside the header, structured header-JSON edits (dtype, shape, offsets, names,
 * metadata, duplicates) and splicing between seed files. The oracle: a mutated file either
 * opens and reads consistently, or fails with a typed error of exit code 3 — never any other
 * exception, a hang past the per-case bound, or an allocation beyond the file's own size.
 * Used by scripts/fuzz-safetensors.ts (≥ 10,000 cases) and a fast subset in test/io/fuzz.test.ts.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApexError } from '../../src/errors.js';
import { Checkpoint, INDEX_FILE } from '../../src/io/checkpoint.js';
import { writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { DTYPE_BITS } from '../../src/io/dtype.js';
import { parseSafetensorsBytes, SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { planSafetensorsLayout } from '../../src/io/safetensors-writer.js';
import { concatArrays } from '../../src/util/typed-arrays.js';

/** mulberry32: small, fast, seedable. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!;

export interface Seed {
  readonly name: string;
  readonly bytes: Uint8Array;
}

const INTERESTING_BYTES = [0x00, 0xff, 0x7b, 0x7d, 0x22, 0x2c, 0x3a, 0x5b, 0x5d, 0x2d, 0x2e, 0x30, 0x39, 0x65, 0x20, 0x0a, 0x5c, 0x80, 0xc0];
const INTERESTING_NUMBERS = ['0', '1', '-1', '2.5', '4.0', '1e3', '9007199254740991', '9007199254740993', '18446744073709551616', '1e400', '-0', '00', '0x10'];

function headerLength(b: Uint8Array): number {
  if (b.length < 8) return 0;
  const n = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  return n > BigInt(b.length) ? b.length - 8 : Number(n);
}

function withLength(b: Uint8Array, len: bigint): Uint8Array {
  const out = b.length >= 8 ? b.slice() : new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, len), true);
  return out;
}

const concat = (...parts: Uint8Array[]): Uint8Array => concatArrays(parts, (n) => new Uint8Array(n));

/** A position biased towards the header, where most of the interesting structure is. */
function position(r: Rand, b: Uint8Array): number {
  const h = 8 + headerLength(b);
  return r() < 0.8 ? int(r, Math.max(1, Math.min(h, b.length))) : int(r, Math.max(1, b.length));
}

/** Rewrites the header JSON (structured edit) and fixes the length field (or not). */
function editHeader(r: Rand, b: Uint8Array): Uint8Array {
  const h = headerLength(b);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + h))) as Record<string, unknown>;
  } catch {
    return b;
  }
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const name = names.length ? pick(r, names) : 'x';
  const current = header[name];
  const entry = (current !== null && typeof current === 'object' && !Array.isArray(current) ? current : { dtype: 'F32', shape: [1], data_offsets: [0, 4] }) as Record<string, unknown>;
  let text: string | undefined;
  switch (int(r, 12)) {
    case 0:
      entry.dtype = pick(r, [...Object.keys(DTYPE_BITS), 'F128', 'f32', '', 'BF16 ', 'Q4_0']);
      break;
    case 1: {
      const shape = Array.isArray(entry.shape) ? [...(entry.shape as unknown[])] : [];
      if (shape.length && r() < 0.7) shape[int(r, shape.length)] = pick(r, [0, 1, -1, 2.5, 2 ** 53, 2 ** 31, (shape[0] as number) + 1, null, '3']);
      else shape.push(pick(r, [1, 0, 2]));
      entry.shape = shape;
      break;
    }
    case 2: {
      const offs = Array.isArray(entry.data_offsets) ? [...(entry.data_offsets as number[])] : [0, 0];
      const i = int(r, 2);
      offs[i] = pick(r, [offs[i]! + 1, offs[i]! - 1, 0, offs[1 - i]!, 2 ** 40, -4, 1.5]);
      entry.data_offsets = offs;
      break;
    }
    case 3:
      delete entry[pick(r, ['dtype', 'shape', 'data_offsets'])];
      break;
    case 4:
      header[`${name}_copy`] = { ...entry };
      break;
    case 5:
      header.__metadata__ = pick(r, [{ format: 'pt', step: 1 }, ['pt'], 'pt', null, { format: 'pt' }, entry]);
      break;
    case 6:
      delete header[name];
      break;
    case 7:
      header[name] = pick(r, [[], null, 3, 'x', {}]);
      break;
    case 8: {
      // textual duplicate of one entry (JSON.parse would hide it)
      const json = JSON.stringify(header);
      text = `${json.slice(0, -1)},${JSON.stringify(name)}:${JSON.stringify(entry)}}`;
      break;
    }
    case 9: {
      // a number token in the header replaced by an interesting one
      const json = JSON.stringify(header);
      const spots = [...json.matchAll(/\d+/g)];
      if (spots.length) {
        const m = pick(r, spots);
        text = json.slice(0, m.index) + pick(r, INTERESTING_NUMBERS) + json.slice(m.index! + m[0].length);
      }
      break;
    }
    case 10:
      text = pick(r, [' ', '\n', '\t', '\r']).repeat(int(r, 5)) + JSON.stringify(header) + pick(r, [' ', '\n', '\u00a0', '\f']).repeat(int(r, 5));
      break;
    default: {
      const other = pick(r, names.length ? names : ['x']);
      header[other] = entry;
      break;
    }
  }
  if (header[name] === undefined && text === undefined && int(r, 2) === 0) header[name] = entry;
  const newHeader = new TextEncoder().encode(text ?? JSON.stringify(header));
  const fixLength = r() < 0.85;
  const out = concat(new Uint8Array(8), newHeader, b.subarray(8 + h));
  return withLength(out, fixLength ? BigInt(newHeader.length) : BigInt(h));
}

export function mutate(r: Rand, seed: Seed, seeds: readonly Seed[]): { bytes: Uint8Array; op: string } {
  let b: Uint8Array = seed.bytes.slice();
  const ops: string[] = [];
  const rounds = 1 + (r() < 0.3 ? int(r, 3) : 0);
  for (let k = 0; k < rounds; k++) {
    const op = pick(r, ['bitflip', 'byte', 'length', 'truncate', 'extend', 'insert', 'delete', 'header', 'header', 'header', 'splice']);
    ops.push(op);
    switch (op) {
      case 'bitflip':
        for (let i = 0, n = 1 + int(r, 8); i < n && b.length; i++) {
          const p = position(r, b);
          b[p] = b[p]! ^ (1 << int(r, 8));
        }
        break;
      case 'byte':
        for (let i = 0, n = 1 + int(r, 4); i < n && b.length; i++) b[position(r, b)] = pick(r, INTERESTING_BYTES);
        break;
      case 'length': {
        const h = BigInt(headerLength(b));
        b = withLength(b, pick(r, [0n, h - 1n, h + 1n, h + 8n, BigInt(b.length), BigInt(b.length) - 7n, 100_000_000n, 100_000_001n, 1n << 32n, (1n << 63n) + h, -1n]));
        break;
      }
      case 'truncate':
        b = b.subarray(0, r() < 0.5 ? position(r, b) : int(r, b.length + 1)).slice();
        break;
      case 'extend':
        b = concat(b, Uint8Array.from({ length: 1 + int(r, 64) }, () => int(r, 256)));
        break;
      case 'insert': {
        const p = position(r, b);
        b = concat(b.subarray(0, p), Uint8Array.from({ length: 1 + int(r, 8) }, () => pick(r, INTERESTING_BYTES)), b.subarray(p));
        break;
      }
      case 'delete': {
        const p = position(r, b);
        b = concat(b.subarray(0, p), b.subarray(Math.min(b.length, p + 1 + int(r, 8))));
        break;
      }
      case 'header':
        b = editHeader(r, b);
        break;
      case 'splice': {
        const other = pick(r, seeds).bytes;
        const from = int(r, other.length);
        const len = 1 + int(r, Math.min(256, other.length - from));
        const at = position(r, b);
        b = r() < 0.5 ? concat(b.subarray(0, at), other.subarray(from, from + len), b.subarray(at)) : concat(b.subarray(0, at), other.subarray(from, from + len), b.subarray(Math.min(b.length, at + len)));
        break;
      }
    }
  }
  return { bytes: b, op: ops.join('+') };
}

/** Mutations of a `model.safetensors.index.json`: generic byte edits and JSON-aware ones. */
export function mutateIndex(r: Rand, text: string): { bytes: Uint8Array; op: string } {
  if (r() < 0.3) {
    const seed = { name: 'index', bytes: new TextEncoder().encode(text) };
    const generic = mutate(r, seed, [seed]);
    if (!generic.op.includes('length') && !generic.op.includes('header') && !generic.op.includes('splice')) return generic;
  }
  const index = JSON.parse(text) as { metadata?: unknown; weight_map: Record<string, unknown> };
  const names = Object.keys(index.weight_map);
  const files = [...new Set(Object.values(index.weight_map))] as string[];
  const name = pick(r, names);
  const op = int(r, 9);
  let out: string | undefined;
  switch (op) {
    case 0:
      index.weight_map[name] = pick(r, [...files, 'model-00009-of-00009.safetensors', '../model.safetensors', 'model.bin', 3, null, '']);
      break;
    case 1:
      delete index.weight_map[name];
      break;
    case 2:
      index.weight_map[`${name}.extra`] = pick(r, files);
      break;
    case 3:
      out = `${JSON.stringify(index).slice(0, -2)},${JSON.stringify(name)}:${JSON.stringify(pick(r, files))}}}`;
      break;
    case 4:
      index.metadata = pick(r, [{ total_size: 1 }, { total_size: 'x' }, 3, null, [], {}]);
      break;
    case 5:
      delete (index as { weight_map?: unknown }).weight_map;
      break;
    case 6:
      (index as { weight_map: unknown }).weight_map = pick(r, [[], 'x', null, {}]);
      break;
    case 7:
      for (const n of names) if (index.weight_map[n] === pick(r, files)) delete index.weight_map[n];
      break;
    default:
      out = JSON.stringify(index).replace(/"weight_map"/, pick(r, ['"weight_map "', '"Weight_map"', '"weight_map"']));
  }
  return { bytes: new TextEncoder().encode(out ?? JSON.stringify(index, null, 2)), op: `json${op}` };
}

export interface CaseOutcome {
  readonly id: number;
  readonly op: string;
  readonly outcome: 'valid' | 'rejected' | 'finding';
  /** The error rule or code when rejected; the problem when a finding. */
  readonly detail: string;
  readonly ms: number;
}

export interface FuzzOptions {
  seed: number;
  cases: number;
  /** First case id (cases are independent: case `id` is fully determined by seed and id). */
  firstCase?: number;
  /** Called before each case (a watchdog in another process can then name a hanging case). */
  onCaseStart?: (id: number) => void;
  seeds: readonly Seed[];
  /** Folder for on-disk cases (every `diskEvery`-th case is also written and opened). */
  workDir: string;
  diskEvery?: number;
  /** A case slower than this is a finding (ms). */
  caseTimeBoundMs?: number;
  /** A sharded checkpoint folder whose index is fuzzed in every `indexEvery`-th case. */
  shardedDir?: string;
  indexText?: string;
  indexEvery?: number;
  onCase?: (c: CaseOutcome) => void;
}

export interface FuzzSummary {
  readonly cases: number;
  readonly valid: number;
  readonly rejected: number;
  readonly findings: CaseOutcome[];
  readonly byRule: Record<string, number>;
  readonly byOp: Record<string, number>;
  readonly diskCases: number;
  readonly indexCases: number;
  readonly maxCaseMs: number;
  readonly maxArrayBufferGrowthBytes: number;
}

/** A typed input error (exit 3) is the only acceptable failure. */
function classify(e: unknown): { ok: boolean; detail: string } {
  if (e instanceof ApexError && e.exit === 3) return { ok: true, detail: (e as ApexError & { rule?: string }).rule ?? e.code };
  return { ok: false, detail: `untyped or wrong exit: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}` };
}

/** After a successful open: the first and last tensors read back with their declared sizes. */
async function readSome(f: SafetensorsFile): Promise<void> {
  const ts = f.tensors;
  for (const t of [ts[0], ts[ts.length - 1]]) {
    if (!t) continue;
    const bytes = await f.readBytes(t.name, { start: 0, end: Math.min(t.end - t.begin, 1 << 20) });
    if (bytes.length !== Math.min(t.end - t.begin, 1 << 20)) throw new Error(`read ${bytes.length} bytes of '${t.name}'`);
  }
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const bound = o.caseTimeBoundMs ?? 2000;
  const diskEvery = o.diskEvery ?? 10;
  const indexEvery = o.indexEvery ?? 10;
  await mkdir(o.workDir, { recursive: true });
  const findings: CaseOutcome[] = [];
  const byRule: Record<string, number> = {};
  const byOp: Record<string, number> = {};
  let valid = 0;
  let rejected = 0;
  let diskCases = 0;
  let indexCases = 0;
  let maxCaseMs = 0;
  let maxGrowth = 0;
  const first = o.firstCase ?? 0;
  for (let id = first; id < first + o.cases; id++) {
    o.onCaseStart?.(id);
    const r = rng((Math.imul(o.seed, 0x9e3779b1) + Math.imul(id, 0x85ebca6b)) >>> 0);
    const isIndexCase = o.shardedDir !== undefined && o.indexText !== undefined && id % indexEvery === indexEvery - 1;
    const t0 = performance.now();
    const ab0 = process.memoryUsage().arrayBuffers;
    let result: { ok: boolean; detail: string; valid: boolean };
    let op: string;
    let size: number;
    if (isIndexCase) {
      indexCases++;
      const m = mutateIndex(r, o.indexText!);
      op = `index:${m.op}`;
      size = m.bytes.length;
      await writeFile(join(o.shardedDir!, INDEX_FILE), m.bytes);
      try {
        const ck = await Checkpoint.open(o.shardedDir!, { requireConfig: false });
        await ck.close();
        result = { ok: true, detail: 'valid', valid: true };
      } catch (e) {
        result = { ...classify(e), valid: false };
      }
    } else {
      const seed = pick(r, o.seeds);
      const m = mutate(r, seed, o.seeds);
      op = m.op;
      size = m.bytes.length;
      let memory: { ok: boolean; detail: string; valid: boolean };
      try {
        parseSafetensorsBytes(`${seed.name}#${id}`, m.bytes);
        memory = { ok: true, detail: 'valid', valid: true };
      } catch (e) {
        memory = { ...classify(e), valid: false };
      }
      result = memory;
      if (id % diskEvery === 0 || memory.valid) {
        diskCases++;
        const path = join(o.workDir, `case.safetensors`);
        await writeFile(path, m.bytes);
        let disk: { ok: boolean; detail: string; valid: boolean };
        try {
          const f = await SafetensorsFile.open(path);
          try {
            await readSome(f);
          } finally {
            await f.close();
          }
          disk = { ok: true, detail: 'valid', valid: true };
        } catch (e) {
          disk = { ...classify(e), valid: false };
        }
        if (disk.valid !== memory.valid || (!disk.valid && disk.ok && memory.ok && disk.detail !== memory.detail)) {
          result = { ok: false, detail: `in-memory and on-disk readers disagree: ${memory.detail} vs ${disk.detail}`, valid: false };
        } else if (!disk.ok) result = disk;
      }
    }
    const ms = performance.now() - t0;
    const growth = process.memoryUsage().arrayBuffers - ab0;
    maxCaseMs = Math.max(maxCaseMs, ms);
    maxGrowth = Math.max(maxGrowth, growth);
    let outcome: CaseOutcome;
    if (!result.ok) outcome = { id, op, outcome: 'finding', detail: result.detail, ms };
    else if (ms > bound) outcome = { id, op, outcome: 'finding', detail: `took ${ms.toFixed(0)} ms (bound ${bound} ms)`, ms };
    else if (growth > 64 * 2 ** 20 + 4 * size) outcome = { id, op, outcome: 'finding', detail: `array buffers grew by ${growth} bytes for a ${size}-byte file`, ms };
    else outcome = { id, op, outcome: result.valid ? 'valid' : 'rejected', detail: result.detail, ms };
    if (outcome.outcome === 'finding') findings.push(outcome);
    else if (outcome.outcome === 'valid') valid++;
    else {
      rejected++;
      byRule[outcome.detail] = (byRule[outcome.detail] ?? 0) + 1;
    }
    for (const part of op.split('+')) byOp[part] = (byOp[part] ?? 0) + 1;
    o.onCase?.(outcome);
  }
  if (o.shardedDir && o.indexText) await writeFile(join(o.shardedDir, INDEX_FILE), o.indexText);
  await rm(join(o.workDir, 'case.safetensors'), { force: true });
  return { cases: o.cases, valid, rejected, findings, byRule, byOp, diskCases, indexCases, maxCaseMs, maxArrayBufferGrowthBytes: maxGrowth };
}

/** Small valid files covering many dtypes, scalars, empty tensors and metadata. */
export function syntheticSeeds(): Seed[] {
  const make = (name: string, tensors: { name: string; dtype: keyof typeof DTYPE_BITS; shape: number[] }[], metadata?: Record<string, string>): Seed => {
    const layout = planSafetensorsLayout(tensors, metadata);
    const data = Uint8Array.from({ length: layout.dataBytes }, (_, i) => (i * 37 + 11) & 0xff);
    return { name, bytes: concat(layout.headerBytes, data) };
  };
  return [
    make('mixed', [
      { name: 'w', dtype: 'BF16', shape: [4, 8] },
      { name: 'b', dtype: 'F32', shape: [8] },
      { name: 'ids', dtype: 'I64', shape: [2, 3] },
      { name: 'mask', dtype: 'BOOL', shape: [5] },
      { name: 'q4', dtype: 'F4', shape: [6] },
      { name: 'f6', dtype: 'F6_E2M3', shape: [4] },
      { name: 'h', dtype: 'F16', shape: [3] },
      { name: 's', dtype: 'F64', shape: [] },
      { name: 'empty', dtype: 'F32', shape: [0, 3] },
    ], { format: 'pt', note: 'seed' }),
    make('one', [{ name: 'x', dtype: 'F32', shape: [2, 2] }]),
    make('none', []),
  ];
}

/** A small sharded checkpoint whose index the fuzzer mutates; returns its folder and index text. */
export async function prepareShardedTarget(dir: string): Promise<{ shardedDir: string; indexText: string }> {
  const shardedDir = join(dir, 'sharded');
  await rm(shardedDir, { recursive: true, force: true });
  const tensors = Array.from({ length: 6 }, (_, i) => ({ name: `model.layers.${i}.w`, dtype: 'F32' as const, shape: [4, 4], source: { kind: 'bytes' as const, data: new Uint8Array(64).fill(i) } }));
  await writeCheckpoint({ outDir: shardedDir, tensors, layout: { kind: 'plan', maxShardBytes: 150 }, hash: false });
  return { shardedDir, indexText: await readFile(join(shardedDir, INDEX_FILE), 'utf8') };
}
