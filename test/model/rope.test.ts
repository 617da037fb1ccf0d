import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import type { RopeSpec } from '../../src/model/model-spec.js';
import { applyRotary, ropeInverseFrequencies, ropeTables, ropeTensors } from '../../src/model/rope.js';
import { maxRelDiff } from './helpers.js';
import { naiveInverseFrequencies } from './naive-llama.js';

const spec = (rope: RopeSpec, headDim: number) => ({ rope, headDim }) as Parameters<typeof naiveInverseFrequencies>[0];

describe('rotary embeddings', () => {
  beforeAll(async () => { await selectBackend('wasm'); });

  it('default inverse frequencies are 1/θ^(2j/d) (to float32 precision)', () => {
    const inv = ropeInverseFrequencies({ theta: 10000, type: 'default', source: 'default' }, 8);
    expect(maxRelDiff(inv, [1, 10000 ** -0.25, 10000 ** -0.5, 10000 ** -0.75])).toBeLessThan(2e-7);
  });

  it('linear scaling with factor 1 equals default exactly; factor f divides', () => {
    const def = ropeInverseFrequencies({ theta: 5e5, type: 'default', source: 'rope_theta' }, 64);
    expect(ropeInverseFrequencies({ theta: 5e5, type: 'linear', factor: 1, source: 'rope_theta' }, 64)).toEqual(def);
    const lin = ropeInverseFrequencies({ theta: 5e5, type: 'linear', factor: 4, source: 'rope_theta' }, 64);
    expect(maxRelDiff(lin, def.map((v) => v / 4))).toBeLessThan(1e-7);
  });

  it('llama3 scaling matches Meta\'s apply_scaling on all three frequency bands', () => {
    const rope: RopeSpec = { theta: 500000, type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192, source: 'rope_parameters' };
    const ours = ropeInverseFrequencies(rope, 128);
    const truth = naiveInverseFrequencies(spec(rope, 128));
    expect(maxRelDiff(ours, truth)).toBeLessThan(1e-6);
    const def = naiveInverseFrequencies(spec({ ...rope, type: 'default' }, 128));
    const ratio = Array.from(truth, (v, j) => def[j]! / v);
    expect(ratio[0]).toBeCloseTo(1, 12); // high frequencies kept
    expect(ratio[63]).toBeCloseTo(8, 9); // low frequencies divided by the factor
    expect(ratio.some((r) => r > 1.01 && r < 7.99)).toBe(true); // smoothed band in between
  });

  it('tables hold cos/sin of position × frequency, duplicated over both halves', () => {
    const inv = Float32Array.from([1, 0.1]);
    const { cos, sin } = ropeTables(inv, 3, 2);
    expect(Array.from(cos)).toEqual([Math.cos(3), Math.cos(Math.fround(0.1) * 3), Math.cos(3), Math.cos(Math.fround(0.1) * 3), Math.cos(4), Math.cos(Math.fround(0.1) * 4), Math.cos(4), Math.cos(Math.fround(0.1) * 4)].map(Math.fround));
    expect(sin[5]).toBeCloseTo(Math.sin(0.4), 6);
  });

  it('applyRotary rotates the pairs (j, j + d/2) as rotate_half does', () => {
    const dh = 4;
    const inv = Float32Array.from([0.5, 0.25]);
    const x = [1, 2, 3, 4, -1, 0.5, 2, -3];
    const rope = ropeTensors(inv, 5, 2);
    const got = applyRotary(tf.tensor4d(x, [1, 1, 2, dh]), rope).dataSync();
    const want: number[] = [];
    for (let t = 0; t < 2; t++) {
      const v = x.slice(t * dh, (t + 1) * dh);
      for (let j = 0; j < dh; j++) {
        const a = (5 + t) * inv[j % 2]!;
        const partner = j < 2 ? -v[j + 2]! : v[j - 2]!;
        want.push(v[j]! * Math.cos(a) + partner * Math.sin(a));
      }
    }
    for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 5);
  });
});
