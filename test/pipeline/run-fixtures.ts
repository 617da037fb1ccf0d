/** Shared by the `apex run` tests: a micro config (seconds per run on wasm), file fingerprints, weight comparison. */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { builtinCorpus } from '../../src/train/data.js';

export const MODEL = path.resolve('fixtures/llama-mha-f32');

/** Five short Moby-Dick chapters: enough documents for a held-out split, quick to tokenize. */
export const MICRO_DATA = builtinCorpus('out-of-domain').slice(2, 7);

/** A two-stage APEX run with a vanilla baseline, 4 steps of 4 × 32 tokens per stage. */
export function microConfig(extra = ''): string {
  return [
    `model: ${MODEL}`,
    'backend: wasm',
    'data:',
    `  train: [${MICRO_DATA.join(', ')}]`,
    '  seq_len: 32',
    '  eval_samples: 6',
    '  calibration_samples: 8',
    'stages: { count: 2, steps: 4 }',
    'optimizer: { lr: 0.001, batch_size: 4 }',
    'eval: { every: null, batch_size: 6 }',
    'checkpoint: { every: 2 }',
    extra,
  ].join('\n');
}

/** A fresh folder holding `run.yaml` with `text`. */
export function configFolder(text: string): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-test-'));
  const file = path.join(dir, 'run.yaml');
  writeFileSync(file, text);
  return { dir, file };
}

/** sha256 and mtime of every file under `dir`, by relative path. */
export function fingerprint(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) walk(full);
      else out.set(path.relative(dir, full), `${createHash('sha256').update(readFileSync(full)).digest('hex')}@${statSync(full).mtimeMs}`);
    }
  };
  walk(dir);
  return out;
}

/** Largest |a − b| over every tensor of two checkpoints with the same tensors. */
export async function maxWeightDifference(a: string, b: string): Promise<number> {
  const x = await Checkpoint.open(a);
  const y = await Checkpoint.open(b);
  try {
    let max = 0;
    const names = x.tensorNames();
    if (names.join() !== y.tensorNames().join()) throw new Error(`${a} and ${b} hold different tensors`);
    for (const name of names) {
      const u = await x.readFloat32(name);
      const v = await y.readFloat32(name);
      for (let i = 0; i < u.length; i++) max = Math.max(max, Math.abs(u[i]! - v[i]!));
    }
    return max;
  } finally {
    await x.close();
    await y.close();
  }
}
