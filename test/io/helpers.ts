/** Shared helpers of the I/O tests: temporary folders and hand-built safetensors bytes. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/** A fresh temporary folder, removed after the test file. */
export async function tempDir(prefix = 'apex-io-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });
  return dir;
}

/** Bytes of a safetensors file with the given header text (unpadded) and data section. */
export function rawSafetensors(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function pseudoRandomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Byte equality via memcmp (vitest's toEqual walks typed arrays element by element: slow for MBs). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Root on Linux can mount a small tmpfs (CI here runs as root); elsewhere injected faults cover it. */
export function canMountTmpfs(): boolean {
  return process.platform === 'linux' && process.getuid?.() === 0;
}
