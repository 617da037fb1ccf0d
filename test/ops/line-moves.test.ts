// Line moves against hand-computed values and against tfjs's own gather (values and
// gradients), on the JavaScript kernels (cpu, wasm) and on the portable route that other
// backends take (with put's concatenation, and without it: the route webgpu takes where the
// concatenation would not fit one storage binding, checked there in line-moves-webgpu.test.ts).
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { lineSet, type LineAxis } from '../../src/ops/line-moves.js';

const x = () => tf.tensor2d([[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]);

for (const backend of ['cpu', 'wasm'] as const) {
  for (const [portable, spread] of [[false, false], [true, false], [true, true]] as const) {
    describe(`line moves on ${backend}${portable ? ` (portable route${spread ? ', put without the concatenation' : ''})` : ''}`, () => {
      beforeAll(async () => {
        await selectBackend(backend);
      });

      it('take and put rows / columns by hand', () => {
        const rows = lineSet(Int32Array.of(2, 0), 0, 3, { portable, spread });
        const cols = lineSet(Int32Array.of(3, 1), 1, 4, { portable, spread });
        tf.tidy(() => {
          expect(rows.take(x()).arraySync()).toEqual([[20, 21, 22, 23], [0, 1, 2, 3]]);
          expect(cols.take(x()).arraySync()).toEqual([[3, 1], [13, 11], [23, 21]]);
          expect(rows.put(x(), tf.tensor2d([[-1, -2, -3, -4], [-5, -6, -7, -8]])).arraySync()).toEqual([[-5, -6, -7, -8], [10, 11, 12, 13], [-1, -2, -3, -4]]);
          expect(cols.put(x(), tf.tensor2d([[-1, -2], [-3, -4], [-5, -6]])).arraySync()).toEqual([[0, -2, 2, -1], [10, -4, 12, -3], [20, -6, 22, -5]]);
        });
        rows.dispose();
        cols.dispose();
      });

      for (const axis of [0, 1] as LineAxis[]) {
        it(`gradients equal those of gather / a masked sum (axis ${axis})`, () => {
          const lines = lineSet(axis === 0 ? Int32Array.of(1, 4, 2) : Int32Array.of(3, 0), axis, axis === 0 ? 5 : 4, { portable, spread });
          const shape: [number, number] = axis === 0 ? [5, 4] : [3, 4];
          const X = tf.variable(tf.randomNormal(shape, 0, 1, 'float32', 7), true, `lm-x-${backend}-${portable}-${spread}-${axis}`);
          const uShape: [number, number] = axis === 0 ? [3, 4] : [3, 2];
          const U = tf.variable(tf.randomNormal(uShape, 0, 1, 'float32', 8), true, `lm-u-${backend}-${portable}-${spread}-${axis}`);
          const Wt = tf.randomNormal(shape, 0, 1, 'float32', 9);
          const Wu = tf.randomNormal(uShape, 0, 1, 'float32', 10);
          const idx = tf.tensor1d(lines.lines, 'int32');
          // Reference: take = gather; put = X where the lines are not replaced, plus the updates scattered in.
          const keep = tf.tensor2d(Array.from({ length: shape[0] * shape[1] }, (_, i) => {
            const line = axis === 0 ? Math.floor(i / shape[1]) : i % shape[1];
            return lines.lines.includes(line) ? 0 : 1;
          }), shape);
          const ours = tf.variableGrads(() => tf.add(tf.sum(tf.mul(lines.take(X), Wu)), tf.sum(tf.mul(lines.put(X, U), Wt))) as tf.Scalar, [X, U]);
          const ref = tf.variableGrads(() => {
            const scattered = tf.gather(tf.concat([X, U], axis), Int32Array.from({ length: shape[axis] }, (_, c) => (lines.lines.indexOf(c) >= 0 ? shape[axis] + lines.lines.indexOf(c) : c)), axis);
            const put = tf.add(tf.mul(X, keep), tf.mul(tf.sub(1, keep), scattered));
            return tf.add(tf.sum(tf.mul(tf.gather(X, idx, axis), Wu)), tf.sum(tf.mul(put, Wt))) as tf.Scalar;
          }, [X, U]);
          expect(ours.value.dataSync()[0]).toBeCloseTo(ref.value.dataSync()[0]!, 4);
          for (const v of [X, U]) expect(Array.from(ours.grads[v.name]!.dataSync())).toEqual(Array.from(ref.grads[v.name]!.dataSync()).map((g) => expect.closeTo(g, 5)));
          tf.dispose([X, U, Wt, Wu, idx, keep, ours.value, ref.value, ...Object.values(ours.grads), ...Object.values(ref.grads)]);
          lines.dispose();
        });
      }

      it('refuses repeated or out-of-range lines and tensors of another extent', () => {
        expect(() => lineSet(Int32Array.of(1, 1), 0, 3)).toThrow(/listed twice/);
        expect(() => lineSet(Int32Array.of(3), 0, 3)).toThrow(/outside \[0, 3\)/);
        const l = lineSet(Int32Array.of(0), 1, 5, { portable, spread });
        expect(() => tf.tidy(() => l.take(x()))).toThrow(/expects 5 lines along axis 1/);
        l.dispose();
      });
    });
  }
}
