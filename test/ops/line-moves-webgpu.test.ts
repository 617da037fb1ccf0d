// put on webgpu where concat([x, updates]) would not fit one storage binding
// (maxStorageBufferBindingSize: 128 MiB on lavapipe) though x does: the device dropped the concat
// and the gather, and the result read as zeros (or a recycled buffer's bytes). AdamW's `lines`
// (structured) puts its trained lines back into each weight this way every step, so a weight
// over half the limit trained on many of its rows came back zeroed. Sized from the device's
// limit (skipped above 512 MiB, where the tensors would be too large to test quickly).
//
// Runs with `APEX_TEST_WEBGPU=1 APEX_WEBGPU_ALLOW_SOFTWARE=1 XDG_RUNTIME_DIR=/tmp/xdg` (lavapipe).
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { lineSet } from '../../src/ops/line-moves.js';
import { maxStorageBindingBytes } from '../../src/ops/webgpu-programs.js';
import { AdamW } from '../../src/train/adamw.js';

const enabled = process.env.APEX_TEST_WEBGPU === '1';
const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

describe.skipIf(!enabled)('put on webgpu past the storage binding limit', () => {
  let limit = Infinity;
  beforeAll(async () => {
    await selectBackend('webgpu');
    limit = maxStorageBindingBytes();
  });
  /** [R, C] float32 at 3/4 of the limit: with k = R/2 lines the concatenation is 9/8 of it. */
  const shape = () => {
    const C = 1024;
    const R = Math.floor((0.75 * limit) / (4 * C));
    return { R, C, k: Math.floor(R / 2) };
  };

  it('puts rows and columns where the concatenation would not fit', async (ctx) => {
    if (limit > 512 * 2 ** 20) ctx.skip();
    const { R, C, k } = shape();
    expect(4 * (R + k) * C).toBeGreaterThan(limit);
    const x = tf.fill([R, C], 1) as tf.Tensor2D;
    const rows = lineSet(Int32Array.from({ length: k }, (_, i) => 2 * i), 0, R);
    const y = rows.put(x, tf.fill([k, C], 2) as tf.Tensor2D);
    const d = (await y.data()) as Float32Array;
    let wrong = 0;
    for (let r = 0; r < R; r++) {
      const want = r % 2 === 0 && r < 2 * k ? 2 : 1;
      if (d[r * C] !== want || d[r * C + C - 1] !== want) wrong++;
    }
    expect(wrong).toBe(0);
    tf.dispose([y]);
    rows.dispose();
    // Columns: [C', R'] with the same sizes transposed.
    const xt = tf.fill([C, R], 1) as tf.Tensor2D;
    const cols = lineSet(Int32Array.from({ length: k }, (_, i) => R - 1 - i), 1, R);
    const yt = cols.put(xt, tf.fill([C, k], 3) as tf.Tensor2D);
    const dt = (await yt.data()) as Float32Array;
    expect([dt[0], dt[R - 1], dt[(C - 1) * R + R - k], dt[(C - 1) * R + R - k - 1]]).toEqual([1, 3, 3, 1]);
    tf.dispose([x, xt, yt]);
    cols.dispose();
  }, 120_000);

  it('AdamW with trained lines on such a weight gives the masked update (structured)', async (ctx) => {
    if (limit > 512 * 2 ** 20) ctx.skip();
    const { R, C, k } = shape();
    const start = tf.randomUniform([R, C], -1, 1, 'float32', 1);
    const g = tf.randomUniform([R, C], -0.1, 0.1, 'float32', 2);
    const maskValues = new Float32Array(R);
    for (let i = 0; i < k; i++) maskValues[i] = 1;
    const mask = tf.tensor(maskValues, [R, 1]);
    // Both variables stay alive to the end, so that neither reads the other's recycled buffer.
    const run = (lines: boolean) => {
      const variable = tf.variable(start.clone());
      const opt = new AdamW([{ name: 'w', variable, mask, ...(lines ? { lines: { axis: 0 as const, indices: Int32Array.from({ length: k }, (_, i) => i) } } : {}) }], { weightDecay: 0.1 });
      opt.apply(new Map([['w', g]]), 0.01);
      opt.dispose();
      return variable;
    };
    const masked = run(false);
    const lined = run(true);
    const [a, b, s] = [(await masked.data()) as Float32Array, (await lined.data()) as Float32Array, (await start.data()) as Float32Array];
    expect(a[0]).not.toBe(s[0]);
    expect(a[(R - 1) * C]).toBe(s[(R - 1) * C]);
    let differing = 0;
    const [ba, bb] = [bits(a), bits(b)];
    for (let i = 0; i < ba.length; i++) if (ba[i] !== bb[i]) differing++;
    expect(differing).toBe(0);
    tf.dispose([masked, lined, start, g, mask]);
  }, 120_000);
});
