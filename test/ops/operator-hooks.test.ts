import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import type { LayerHooks, ProjectionKey } from '../../src/model/layer-hooks.js';
import { fuseDownProjection, fuseGateOrUp, fuseOutputProjection, fuseValueProjection } from '../../src/ops/fusion.js';
import { disposeOperatorVariables, operatorHooks, operatorVariableList, operatorVariables, readOperatorVariables } from '../../src/ops/operator-hooks.js';
import { initLayerOperators, type LayerOperators } from '../../src/ops/operator-init.js';
import { headRows } from '../../src/ops/unit-rows.js';
import { Rng } from '../../src/util/rng.js';
import { denseMonarch, matvec, maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

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

  /** x·Wᵀ + b with the hooks' transformed weight and bias. */
  const projectWith = (h: LayerHooks, key: ProjectionKey, W: Float32Array, bias: Float32Array, out: number) => {
    const Wt = h.transformWeight!(key, tf.tensor2d(W, [out, hidden]));
    const bt = h.transformBias!(key, tf.tensor1d(bias));
    return project(x, Wt.dataSync() as Float32Array, bt.dataSync() as Float32Array, out);
  };

  /**
   * §3's output side stated on activations, by hand in float64 with the dense Monarch matrix of
   * dense-reference.ts: per token, y_N ← a ⊙ y_N + M·y_P and y_P ← b ⊙ y_P (rows = unit lines).
   */
  function activationRule(y: Float32Array, width: number, P: Int32Array, N: Int32Array, op: { B1: Float32Array; B2: Float32Array; nb: number; bs: number; a: Float32Array }, b: Float32Array): Float64Array {
    const M = denseMonarch(op.B1, op.B2, op.nb, op.bs);
    const out = Float64Array.from(y);
    for (let t = 0; t < y.length / width; t++) {
      const yP = Array.from(P, (c) => y[t * width + c]!);
      const mixed = matvec(M, yP);
      N.forEach((c, i) => { out[t * width + c] = op.a[i]! * y[t * width + c]! + mixed[i]!; });
      P.forEach((c, i) => { out[t * width + c] = b[i]! * yP[i]!; });
    }
    return out;
  }

  it('v_proj: the transformed weight and bias equal fusion and §3\'s rule on the activations', () => {
    const kvRows = spec.numKvHeads * spec.headDim;
    const W = randomArray(rng, kvRows * hidden);
    const bias = randomArray(rng, kvRows);
    const got = tf.tidy(() => projectWith(hooks, 'v_proj', W, bias, kvRows).dataSync());
    const Wf = W.slice();
    const bf = bias.slice();
    fuseValueProjection(Wf, hidden, ops.attn!, spec.headDim);
    fuseValueProjection(bf, 1, ops.attn!, spec.headDim);
    const want = tf.tidy(() => project(x, Wf, bf, kvRows).dataSync());
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-5 * maxAbs(want));
    const plain = tf.tidy(() => project(x, W, bias, kvRows).dataSync() as Float32Array);
    const rows = (u: Int32Array) => headRows(u, spec.headDim);
    const byRule = activationRule(plain, kvRows, rows(ops.attn!.P), rows(ops.attn!.N), ops.attn!, ops.attn!.bV);
    expect(maxAbsDiff(got, byRule)).toBeLessThan(1e-5 * maxAbs(byRule));
    expect(maxAbsDiff(got, plain)).toBeGreaterThan(1e-3);
  });

  it('gate_proj and up_proj equal fusion and §3\'s rule on the activations (shared M and a, own b)', () => {
    const Wg = randomArray(rng, I * hidden);
    const Wu = randomArray(rng, I * hidden);
    const bg = randomArray(rng, I);
    const bu = randomArray(rng, I);
    const [g, u] = tf.tidy(() => [projectWith(hooks, 'gate_proj', Wg, bg, I), projectWith(hooks, 'up_proj', Wu, bu, I)].map((t) => t.dataSync()));
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
    const plainU = tf.tidy(() => project(x, Wu, bu, I).dataSync() as Float32Array);
    const byRule = activationRule(plainU, I, ops.mlp!.P, ops.mlp!.N, ops.mlp!, ops.mlp!.bUp);
    expect(maxAbsDiff(u!, byRule)).toBeLessThan(1e-5 * maxAbs(byRule));
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
    const g = tf.tidy(() => {
      const Wt = h.transformWeight!('gate_proj', tf.tensor2d(Wg, [wide, hidden]));
      const bt = h.transformBias!('gate_proj', tf.tensor1d(bg));
      return project(x, Wt.dataSync() as Float32Array, bt.dataSync() as Float32Array, wide).dataSync();
    });
    fuseGateOrUp(Wg, hidden, big.mlp!, 'gate_proj');
    fuseGateOrUp(bg, 1, big.mlp!, 'gate_proj');
    const want = tf.tidy(() => project(x, Wg, bg, wide).dataSync());
    expect(maxAbsDiff(g, want)).toBeLessThan(1e-5 * maxAbs(want));

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
    const Wv = randomArray(rng, 8 * hidden);
    const Wg = randomArray(rng, I * hidden);
    const bg = randomArray(rng, I);
    const Wo = randomArray(rng, hidden * 16);
    const Wd = randomArray(rng, hidden * I);
    tf.tidy(() => {
      expect(h.transformWeight!('v_proj', tf.tensor2d(Wv, [8, hidden])).dataSync()).toEqual(Wv);
      expect(h.transformWeight!('gate_proj', tf.tensor2d(Wg, [I, hidden])).dataSync()).toEqual(Wg);
      expect(h.transformBias!('gate_proj', tf.tensor1d(bg)).dataSync()).toEqual(bg);
      expect(h.transformWeight!('up_proj', tf.tensor2d(Wg, [I, hidden])).dataSync()).toEqual(Wg);
      expect(h.transformWeight!('o_proj', tf.tensor2d(Wo, [hidden, 16])).dataSync()).toEqual(Wo);
      expect(h.transformWeight!('down_proj', tf.tensor2d(Wd, [hidden, I])).dataSync()).toEqual(Wd);
    });
    disposeOperatorVariables(fresh);
  });

  it('gradients reach B1, B2, a, b and the weights', () => {
    const weight = (rows: number, cols: number) => tf.variable(tf.tensor2d(randomArray(rng, rows * cols), [rows, cols]));
    const Wv = weight(8, hidden);
    const Wg = weight(I, hidden);
    const Wu = weight(I, hidden);
    const Wo = weight(hidden, 16);
    const Wd = weight(hidden, I);
    const bv = tf.variable(tf.tensor1d(randomArray(rng, 8)));
    const list = [...operatorVariableList(vars), Wv, Wg, Wu, Wo, Wd, bv];
    const { value, grads } = tf.variableGrads(() => {
      const terms = [
        hooks.transformWeight!('v_proj', Wv), hooks.transformBias!('v_proj', bv), hooks.transformWeight!('o_proj', Wo),
        hooks.transformWeight!('gate_proj', Wg), hooks.transformWeight!('up_proj', Wu), hooks.transformWeight!('down_proj', Wd),
      ];
      return tf.addN(terms.map((t) => tf.sum(tf.square(t)))) as tf.Scalar;
    }, list);
    expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
    for (const variable of list) {
      const grad = grads[variable.name]!.dataSync();
      expect(grad.every((z) => Number.isFinite(z)), variable.name).toBe(true);
      expect(maxAbs(grad), variable.name).toBeGreaterThan(0);
    }
    tf.dispose([value, ...Object.values(grads), ...list.slice(-6)]);
  });

  it('reads trained values back as plain operators', async () => {
    const back = await readOperatorVariables(vars);
    expect(back).toEqual(ops);
  });
});
