import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { registerCpuTrainingKernels } from '../../src/model/cpu-training-kernels.js';
import { fuseDownProjection, fuseGateOrUp, fuseOutputProjection, fuseValueProjection } from '../../src/ops/fusion.js';
import { disposeOperatorVariables, operatorHooks, operatorVariableList, operatorVariables, readOperatorVariables } from '../../src/ops/operator-hooks.js';
import { initLayerOperators, type LayerOperators } from '../../src/ops/operator-init.js';
import { Rng } from '../../src/util/rng.js';
import { maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

// GQA layer: H = 8 query heads, 4 KV heads of d_h = 2, hidden 8, I = 12.
const spec = { numHeads: 8, numKvHeads: 4, headDim: 2 };
const hidden = 8;
const I = 12;
const rng = new Rng(123);

function randomOperators(): LayerOperators {
  const r = new Rng(99);
  // attn: k = 2 → n = k·d_h = 4 (nb = bs = 2); mlp: k = 4 → n = 4
  const attnN = 4;
  const mlpN = 4;
  return {
    layer: 0,
    attn: {
      P: Int32Array.of(3, 1), N: Int32Array.of(0, 2), nb: 2, bs: 2,
      B1: randomArray(r, 8, 0.5), B2: randomArray(r, 8, 0.3), a: randomArray(r, attnN, 0.05, 1), bV: randomArray(r, attnN, 0.05, 1),
    },
    mlp: {
      P: Int32Array.of(3, 7, 1, 10), N: Int32Array.of(0, 5, 2, 9), nb: 2, bs: 2,
      B1: randomArray(r, 8, 0.5), B2: randomArray(r, 8, 0.3), a: randomArray(r, mlpN, 0.05, 1), bGate: randomArray(r, mlpN, 0.05, 1), bUp: randomArray(r, mlpN, 0.05, 1),
    },
  };
}

// The hooks move rows with UnsortedSegmentSum; tfjs's own cpu kernel runs one kernel per row.
registerCpuTrainingKernels();

const ops = randomOperators();
const vars = operatorVariables(ops);
const hooks = operatorHooks(vars, spec);
afterAll(() => disposeOperatorVariables(vars));

/** x·Wᵀ + bias for x [B, T, in], W [out, in] given as flat arrays. */
function project(x: tf.Tensor3D, W: Float32Array, bias: Float32Array, out: number): tf.Tensor3D {
  const [B, T, inDim] = x.shape;
  const y = tf.add(tf.matMul(tf.reshape(x, [B * T, inDim]), tf.tensor2d(W, [out, inDim]), false, true), tf.tensor1d(bias));
  return tf.reshape(y, [B, T, out]);
}

describe('operator-augmented forward vs fusion', () => {
  const x = tf.tensor3d(randomArray(rng, 2 * 3 * hidden), [2, 3, hidden]);

  it('mixValue(x·Wᵀ + b) equals x·(fused W)ᵀ + fused b', () => {
    const kvRows = spec.numKvHeads * spec.headDim;
    const W = randomArray(rng, kvRows * hidden);
    const bias = randomArray(rng, kvRows);
    const got = tf.tidy(() => hooks.mixValue!(project(x, W, bias, kvRows)).dataSync());
    const Wf = W.slice();
    const bf = bias.slice();
    fuseValueProjection(Wf, hidden, ops.attn!, spec.headDim);
    fuseValueProjection(bf, 1, ops.attn!, spec.headDim);
    const want = tf.tidy(() => project(x, Wf, bf, kvRows).dataSync());
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-5 * maxAbs(want));
    expect(maxAbsDiff(got, tf.tidy(() => project(x, W, bias, kvRows).dataSync()))).toBeGreaterThan(1e-3);
  });

  it('mixGateUp equals the fused gate and up projections', () => {
    const Wg = randomArray(rng, I * hidden);
    const Wu = randomArray(rng, I * hidden);
    const bg = randomArray(rng, I);
    const bu = randomArray(rng, I);
    const [g, u] = tf.tidy(() => hooks.mixGateUp!(project(x, Wg, bg, I), project(x, Wu, bu, I)).map((t) => t.dataSync()));
    const fg = [Wg.slice(), bg.slice()];
    const fu = [Wu.slice(), bu.slice()];
    fuseGateOrUp(fg[0]!, hidden, ops.mlp!, 'gate_proj');
    fuseGateOrUp(fg[1]!, 1, ops.mlp!, 'gate_proj');
    fuseGateOrUp(fu[0]!, hidden, ops.mlp!, 'up_proj');
    fuseGateOrUp(fu[1]!, 1, ops.mlp!, 'up_proj');
    const wantG = tf.tidy(() => project(x, fg[0]!, fg[1]!, I).dataSync());
    const wantU = tf.tidy(() => project(x, fu[0]!, fu[1]!, I).dataSync());
    expect(maxAbsDiff(g!, wantG)).toBeLessThan(1e-5 * maxAbs(wantG));
    expect(maxAbsDiff(u!, wantU)).toBeLessThan(1e-5 * maxAbs(wantU));
  });

  it('transformWeight builds the fused o_proj (GQA slots) and down_proj', () => {
    const Wo = randomArray(rng, hidden * spec.numHeads * spec.headDim);
    const got = tf.tidy(() => hooks.transformWeight!('o_proj', tf.tensor2d(Wo, [hidden, 16])).dataSync());
    const want = Wo.slice();
    fuseOutputProjection(want, ops.attn!, spec);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-5 * maxAbs(want));

    const Wd = randomArray(rng, hidden * I);
    const gotD = tf.tidy(() => hooks.transformWeight!('down_proj', tf.tensor2d(Wd, [hidden, I])).dataSync());
    const wantD = Wd.slice();
    fuseDownProjection(wantD, I, ops.mlp!);
    expect(maxAbsDiff(gotD, wantD)).toBeLessThan(1e-5 * maxAbs(wantD));

    const q = tf.tensor2d(Wo, [16, hidden]);
    expect(hooks.transformWeight!('q_proj', q)).toBe(q);
    q.dispose();
  });

  it('a channel operator above the dense-M size (n = 1056) uses the factorised product and equals fusion', () => {
    const wide = 2 * 1056;
    const r = new Rng(5);
    const n = wide / 2;
    const big: LayerOperators = {
      layer: 0,
      mlp: {
        P: Int32Array.from({ length: n }, (_, i) => 2 * i), N: Int32Array.from({ length: n }, (_, i) => 2 * (n - 1 - i) + 1), nb: 32, bs: 33,
        B1: randomArray(r, 32 * 33 * 33, 0.2), B2: randomArray(r, 32 * 33 * 33, 0.2), a: randomArray(r, n, 0.05, 1), bGate: randomArray(r, n, 0.05, 1), bUp: randomArray(r, n, 0.05, 1),
      },
    };
    const bigVars = operatorVariables(big);
    const h = operatorHooks(bigVars, spec);
    const Wg = randomArray(rng, wide * hidden);
    const bg = randomArray(rng, wide);
    const [g] = tf.tidy(() => h.mixGateUp!(project(x, Wg, bg, wide), project(x, Wg, bg, wide)).map((t) => t.dataSync()));
    fuseGateOrUp(Wg, hidden, big.mlp!, 'gate_proj');
    fuseGateOrUp(bg, 1, big.mlp!, 'gate_proj');
    const want = tf.tidy(() => project(x, Wg, bg, wide).dataSync());
    expect(maxAbsDiff(g!, want)).toBeLessThan(1e-5 * maxAbs(want));

    const Wd = randomArray(rng, hidden * wide);
    const gotD = tf.tidy(() => h.transformWeight!('down_proj', tf.tensor2d(Wd, [hidden, wide])).dataSync());
    fuseDownProjection(Wd, wide, big.mlp!);
    expect(maxAbsDiff(gotD, Wd)).toBeLessThan(1e-5 * maxAbs(Wd));
    disposeOperatorVariables(bigVars);
  });

  it('fresh operators are exactly the identity', () => {
    const fresh = operatorVariables(initLayerOperators(0, {
      heads: { P: Int32Array.of(1), N: Int32Array.of(0), E: new Int32Array(0) },
      channels: { P: Int32Array.of(3, 7), N: Int32Array.of(0, 5), E: new Int32Array(0) },
    }, spec.headDim, new Rng(1)));
    const h = operatorHooks(fresh, spec);
    const v = randomArray(rng, 2 * 3 * 8);
    const g = randomArray(rng, 2 * 3 * I);
    const Wo = randomArray(rng, hidden * 16);
    tf.tidy(() => {
      expect(h.mixValue!(tf.tensor3d(v, [2, 3, 8])).dataSync()).toEqual(v);
      const [gg, uu] = h.mixGateUp!(tf.tensor3d(g, [2, 3, I]), tf.tensor3d(g, [2, 3, I]));
      expect(gg.dataSync()).toEqual(g);
      expect(uu.dataSync()).toEqual(g);
      expect(h.transformWeight!('o_proj', tf.tensor2d(Wo, [hidden, 16])).dataSync()).toEqual(Wo);
    });
    disposeOperatorVariables(fresh);
  });

  it('gradients reach B1, B2, a, b and the weights', () => {
    const v = tf.tensor3d(randomArray(rng, 2 * 3 * 8), [2, 3, 8]);
    const gate = tf.tensor3d(randomArray(rng, 2 * 3 * I), [2, 3, I]);
    const Wo = tf.variable(tf.tensor2d(randomArray(rng, hidden * 16), [hidden, 16]));
    const Wd = tf.variable(tf.tensor2d(randomArray(rng, hidden * I), [hidden, I]));
    const list = [...operatorVariableList(vars), Wo, Wd];
    const { value, grads } = tf.variableGrads(() => {
      const [g, u] = hooks.mixGateUp!(gate, gate);
      const terms = [hooks.mixValue!(v), g, u, hooks.transformWeight!('o_proj', Wo), hooks.transformWeight!('down_proj', Wd)];
      return tf.addN(terms.map((t) => tf.sum(tf.square(t)))) as tf.Scalar;
    }, list);
    expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
    for (const variable of list) {
      const grad = grads[variable.name]!.dataSync();
      expect(grad.every((z) => Number.isFinite(z)), variable.name).toBe(true);
      expect(maxAbs(grad), variable.name).toBeGreaterThan(0);
    }
    tf.dispose([value, ...Object.values(grads), v, gate, Wo, Wd]);
  });

  it('reads trained values back as plain operators', () => {
    const back = readOperatorVariables(vars);
    expect(back).toEqual(ops);
  });
});
