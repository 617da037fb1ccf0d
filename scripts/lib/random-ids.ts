/**
 * Seeded random token ids for the measurement scripts: [n, seqLen] I32 below `vocab`, from a
 * xorshift32 stream (the same ids for the same seed on every machine).
 */
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';

export async function writeRandomIds(path: string, vocab: number, n: number, seqLen: number, seed: number): Promise<void> {
  const ids = new Int32Array(n * seqLen);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < ids.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    ids[i] = x % vocab;
  }
  await writeSafetensors(path, [i32Tensor('input_ids', [n, seqLen], ids)]);
}
