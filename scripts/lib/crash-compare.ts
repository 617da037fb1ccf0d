/**
 * Comparing what a killed-and-resumed apex produced with what an uninterrupted run produced:
 * the largest absolute difference over every tensor of two checkpoints or safetensors files
 * (same names, shapes and dtypes required), and the training-loss sequences of two
 * metrics.jsonl files (same steps, each exactly once).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';

interface TensorSource {
  names(): string[];
  describe(name: string): string;
  float(name: string): Promise<Float32Array>;
  bytes(name: string): Promise<Uint8Array>;
  isFloat(name: string): boolean;
  close(): Promise<void>;
}

const FLOATS = new Set(['F16', 'BF16', 'F32', 'F64']);

async function openSource(path: string): Promise<TensorSource> {
  if (statSync(path).isDirectory()) {
    const ck = await Checkpoint.open(path);
    return {
      names: () => ck.tensorNames().slice().sort(),
      describe: (n) => { const t = ck.info(n); return `${t.dtype}[${t.shape.join(',')}]`; },
      float: (n) => ck.readFloat32(n),
      bytes: (n) => ck.readBytes(n),
      isFloat: (n) => FLOATS.has(ck.info(n).dtype),
      close: () => ck.close(),
    };
  }
  const f = await SafetensorsFile.open(path);
  return {
    names: () => f.tensors.map((t) => t.name).sort(),
    describe: (n) => { const t = f.info(n)!; return `${t.dtype}[${t.shape.join(',')}]`; },
    float: (n) => f.readFloat32(n),
    bytes: (n) => f.readBytes(n),
    isFloat: (n) => FLOATS.has(f.info(n)!.dtype),
    close: () => f.close(),
  };
}

/**
 * Largest |a − b| over all float tensors (Infinity when the tensor sets, shapes or dtypes
 * differ, or a non-float tensor's bytes differ); the tensor where it occurs.
 */
export async function maxTensorDifference(a: string, b: string): Promise<{ max: number; where: string }> {
  const x = await openSource(a);
  const y = await openSource(b);
  try {
    const names = x.names();
    if (names.join('\n') !== y.names().join('\n')) return { max: Infinity, where: 'tensor names differ' };
    let max = 0;
    let where = '';
    for (const name of names) {
      if (x.describe(name) !== y.describe(name)) return { max: Infinity, where: `${name}: ${x.describe(name)} vs ${y.describe(name)}` };
      if (!x.isFloat(name)) {
        if (!Buffer.from(await x.bytes(name)).equals(Buffer.from(await y.bytes(name)))) return { max: Infinity, where: `${name}: bytes differ` };
        continue;
      }
      const u = await x.float(name);
      const v = await y.float(name);
      for (let i = 0; i < u.length; i++) {
        const d = Math.abs(u[i]! - v[i]!);
        if (d > max || Number.isNaN(d)) {
          max = Number.isNaN(d) ? Infinity : d;
          where = name;
        }
      }
    }
    return { max, where };
  } finally {
    await x.close();
    await y.close();
  }
}

interface MetricsLine {
  step: number;
  loss?: number;
  grad_norm?: number;
  eval_loss?: number;
}

function readLines(path: string): MetricsLine[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as MetricsLine);
}

/**
 * Compares two metrics.jsonl files: the same steps in the same order, each once, and the
 * largest relative difference of loss, grad_norm and eval_loss.
 */
export function compareMetrics(a: string, b: string): { sameSteps: boolean; steps: string; maxRelative: number } {
  const x = readLines(a);
  const y = readLines(b);
  const steps = (m: MetricsLine[]) => m.map((l) => l.step).join(',');
  let maxRelative = 0;
  if (steps(x) === steps(y)) {
    x.forEach((l, i) => {
      for (const k of ['loss', 'grad_norm', 'eval_loss'] as const) {
        const u = l[k];
        const v = y[i]![k];
        if (u === undefined && v === undefined) continue;
        if (u === undefined || v === undefined) maxRelative = Infinity;
        else maxRelative = Math.max(maxRelative, Math.abs(u - v) / Math.max(1, Math.abs(v)));
      }
    });
  }
  return { sameSteps: steps(x) === steps(y), steps: steps(x), maxRelative };
}
