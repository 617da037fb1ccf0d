import { describe, expect, it } from 'vitest';
import { fuseDownProjection, fuseGateOrUp, fuseInputColumns, fuseLayerTensor, fuseOutputProjection, fuseOutputRows, fuseValueProjection, touchedTensors } from '../../src/ops/fusion.js';
import type { ChannelOperator, HeadOperator, LayerOperators } from '../../src/ops/operator-init.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { findLayerTensor, type LayerRole } from '../../src/model/architecture.js';
import { Rng } from '../../src/util/rng.js';
import { denseMonarch, maxAbs, maxAbsDiff, randomArray } from './dense-reference.js';

const f32 = (...v: number[]) => Float32Array.from(v);
const i32 = (...v: number[]) => Int32Array.from(v);

// n = 2 → nb = 1, bs = 2, and M = B2·B1 = [[1,0],[1,1]]·[[1,2],[0,1]] = [[1,2],[1,3]].
const B1_2 = f32(1, 2, 0, 1);
const B2_2 = f32(1, 0, 1, 1);

function channelOp(P: Int32Array, N: Int32Array, B1: Float32Array, B2: Float32Array, a: Float32Array, bGate: Float32Array, bUp: Float32Array, nb: number, bs: number): ChannelOperator {
  return { P, N, B1, B2, nb, bs, a, bGate, bUp };
}

function headOp(P: Int32Array, N: Int32Array, B1: Float32Array, B2: Float32Array, a: Float32Array, bV: Float32Array, nb: number, bs: number): HeadOperator {
  return { P, N, B1, B2, nb, bs, a, bV };
}

function spec(over: Partial<ModelSpec>): ModelSpec {
  return {
    architecture: 'LlamaForCausalLM', numLayers: 1, hiddenSize: 2, numHeads: 1, numKvHeads: 1, headDim: 1, intermediateSize: 1,
    vocabSize: 8, tieWordEmbeddings: false, rmsNormEps: 1e-5, rope: { theta: 10000, type: 'default', source: 'default' },
    qkvBias: false, oBias: false, mlpBias: false, maxPositionEmbeddings: 64, eosTokenIds: [], ...over,
  };
}

describe('output side (rows): W[N] ← diag(a)·W[N] + M·W[P], W[P] ← diag(b)·W[P]', () => {
  it('1×1 operator on gate and up (own b each)', () => {
    // M = B2·B1 = 0.25·2 = 0.5, a = 3; N = row 0, P = row 2
    const op = channelOp(i32(2), i32(0), f32(2), f32(0.25), f32(3), f32(2), f32(-1), 1, 1);
    const gate = f32(1, 2, 3, 4, 5, 6);
    fuseGateOrUp(gate, 2, op, 'gate_proj');
    expect(Array.from(gate)).toEqual([5.5, 9, 3, 4, 10, 12]); // 3·[1,2] + 0.5·[5,6]; 2·[5,6]
    const up = f32(1, 2, 3, 4, 5, 6);
    fuseGateOrUp(up, 2, op, 'up_proj');
    expect(Array.from(up)).toEqual([5.5, 9, 3, 4, -5, -6]);
  });

  it('2×2 operator, P and N in selection order, mixing from the unscaled W[P]', () => {
    // P = [2, 0], N = [3, 1], a = [2, 0.5], b = [1, 3]
    const op = channelOp(i32(2, 0), i32(3, 1), B1_2, B2_2, f32(2, 0.5), f32(1, 3), f32(1, 1), 1, 2);
    const W = f32(1, 0, 2, /**/ 0, 1, 1, /**/ 2, 1, 0, /**/ 1, 1, 1);
    fuseGateOrUp(W, 3, op, 'gate_proj');
    // M·[r2; r0] = [[4,1,4],[5,1,6]]; r3 = 2·[1,1,1] + [4,1,4]; r1 = 0.5·[0,1,1] + [5,1,6]; r0 = 3·r0
    expect(Array.from(W)).toEqual([3, 0, 6, /**/ 5, 1.5, 6.5, /**/ 2, 1, 0, /**/ 6, 3, 6]);
  });

  it('biases follow their rows', () => {
    const op = channelOp(i32(2, 0), i32(3, 1), B1_2, B2_2, f32(2, 0.5), f32(1, 3), f32(1, 1), 1, 2);
    const bias = f32(1, 2, 3, 4);
    fuseGateOrUp(bias, 1, op, 'gate_proj');
    // x = [b2, b0] = [3, 1], M·x = [5, 6]; b3 = 2·4 + 5; b1 = 0.5·2 + 6; b0 = 3·1
    expect(Array.from(bias)).toEqual([3, 7, 3, 13]);
  });

  it('v_proj: head units expand to d_h rows, head-major', () => {
    // 3 KV heads of d_h = 2; P = [2] → rows 4,5; N = [0] → rows 0,1; a = [2, 0.5], b_v = [1, 3]
    const op = headOp(i32(2), i32(0), B1_2, B2_2, f32(2, 0.5), f32(1, 3), 1, 2);
    const W = f32(1, 0, /**/ 0, 1, /**/ 1, 1, /**/ 2, 2, /**/ 1, 2, /**/ 3, 0);
    fuseValueProjection(W, 2, op, 2);
    // M·[[1,2],[3,0]] = [[7,2],[10,2]]; r0 = 2·[1,0] + [7,2]; r1 = 0.5·[0,1] + [10,2]; r5 = 3·[3,0]
    expect(Array.from(W)).toEqual([9, 2, 10, 2.5, 1, 1, 2, 2, 1, 2, 9, 0]);
  });
});

describe('input side (columns): W[:, N] ← W[:, N]·diag(a) + W[:, P]·Mᵀ', () => {
  it('down_proj, 2×2 operator', () => {
    const op = channelOp(i32(2, 0), i32(3, 1), B1_2, B2_2, f32(2, 0.5), f32(7, 7), f32(7, 7), 1, 2);
    const W = f32(1, 2, 3, 4, /**/ 5, 6, 7, 8);
    fuseDownProjection(W, 4, op);
    // row 0: W[:,P] = [3,1] → [3,1]·Mᵀ = [5,6]; col3 = 4·2 + 5, col1 = 2·0.5 + 6
    // row 1: [7,5]·Mᵀ = [17,22]; col3 = 8·2 + 17, col1 = 6·0.5 + 22
    expect(Array.from(W)).toEqual([1, 7, 3, 13, /**/ 5, 25, 7, 33]);
  });

  it('down_proj with a Monarch of nb = 2 (n = 4)', () => {
    // Hand-computed in monarch.test: M·[1,2,3,4] = [44,22,39,64]
    const op = channelOp(i32(4, 5, 6, 7), i32(0, 1, 2, 3), f32(1, 2, 3, 4, 5, 6, 7, 8), f32(1, 1, 0, 1, 2, 0, 1, 1), f32(1, 1, 1, 0.5), f32(1, 1, 1, 1), f32(1, 1, 1, 1), 2, 2);
    const W = f32(10, 20, 30, 40, 1, 2, 3, 4);
    fuseDownProjection(W, 8, op);
    expect(Array.from(W)).toEqual([54, 42, 69, 84, 1, 2, 3, 4]);
  });

  it('o_proj under GQA: every slot of a group, same M and a (d_h = 1)', () => {
    // H = 4, nKv = 2: group 0 = heads {0,1}, group 1 = {2,3}. P = [1], N = [0]; M = 1.5·2 = 3, a = 0.5.
    const op = headOp(i32(1), i32(0), f32(2), f32(1.5), f32(0.5), f32(1), 1, 1);
    const W = f32(1, 2, 3, 4, /**/ 5, 6, 7, 8);
    fuseOutputProjection(W, op, { numHeads: 4, numKvHeads: 2, headDim: 1 });
    // slot 0: col0 ← col0·0.5 + 3·col2; slot 1: col1 ← col1·0.5 + 3·col3
    expect(Array.from(W)).toEqual([9.5, 13, 3, 4, /**/ 23.5, 27, 7, 8]);
  });

  it('o_proj under GQA with d_h = 2 (head-major columns per slot)', () => {
    const op = headOp(i32(1), i32(0), B1_2, B2_2, f32(2, 0.5), f32(1, 1), 1, 2);
    const W = f32(1, 2, 3, 4, 5, 6, 7, 8);
    fuseOutputProjection(W, op, { numHeads: 4, numKvHeads: 2, headDim: 2 });
    // slot 0: P = head 2 (cols 4,5), N = head 0 (cols 0,1): M·[5,6] = [17,23] → [1·2+17, 2·0.5+23]
    // slot 1: P = head 3 (cols 6,7), N = head 1 (cols 2,3): M·[7,8] = [23,31] → [3·2+23, 4·0.5+31]
    expect(Array.from(W)).toEqual([19, 24, 29, 33, 5, 6, 7, 8]);
  });

  it('v_proj under GQA uses the KV-head rows', () => {
    const op = headOp(i32(1), i32(0), B1_2, B2_2, f32(2, 0.5), f32(1, 3), 1, 2);
    const W = f32(1, 2, 3, 4);
    fuseValueProjection(W, 1, op, 2);
    // M·[3,4] = [11,15]; rows 0,1 = [2·1+11, 0.5·2+15]; rows 2,3 = [1·3, 3·4]
    expect(Array.from(W)).toEqual([13, 16, 3, 12]);
  });

  it('two head units of d_h = 2 with a Monarch of nb = 2: rows and columns head-major', () => {
    // P = [2, 0] → positions [4, 5, 0, 1]; N = [1, 3] → [2, 3, 6, 7]; M·[1,2,3,4] = [44,22,39,64]
    const mon = { B1: f32(1, 2, 3, 4, 5, 6, 7, 8), B2: f32(1, 1, 0, 1, 2, 0, 1, 1) };
    const op = headOp(i32(2, 0), i32(1, 3), mon.B1, mon.B2, f32(1, 1, 1, 0.5), f32(2, 1, 1, 1), 2, 2);
    const values = () => f32(3, 4, 10, 20, 1, 2, 30, 40);
    const bias = values();
    fuseValueProjection(bias, 1, op, 2); // v_proj bias of 4 KV heads
    expect(Array.from(bias)).toEqual([3, 4, 54, 42, 2, 2, 69, 84]);
    const o = values();
    fuseOutputProjection(o, op, { numHeads: 4, numKvHeads: 4, headDim: 2 }); // o_proj [1, 8], MHA
    expect(Array.from(o)).toEqual([3, 4, 54, 42, 1, 2, 69, 84]);
  });

  it('matches a dense reference across input-side row blocks (600 rows, n = 6, nb = 2)', () => {
    const rng = new Rng(5);
    const rows = 600;
    const cols = 20;
    const P = i32(19, 3, 7, 11, 0, 15);
    const N = i32(2, 4, 18, 9, 13, 1);
    const B1 = randomArray(rng, 18);
    const B2 = randomArray(rng, 18);
    const a = randomArray(rng, 6, 0.05, 1);
    const W = randomArray(rng, rows * cols);
    const M = denseMonarch(B1, B2, 2, 3);
    const want = Float64Array.from(W);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < 6; i++) {
        let s = W[r * cols + N[i]!]! * a[i]!;
        for (let j = 0; j < 6; j++) s += W[r * cols + P[j]!]! * M.v[i * 6 + j]!;
        want[r * cols + N[i]!] = s;
      }
    }
    fuseInputColumns(W, cols, P, N, { B1, B2, a });
    expect(maxAbsDiff(W, want)).toBeLessThan(1e-6 * maxAbs(want));
  });
});

describe('block boundaries', () => {
  it('input side matches a dense reference with unsorted P/N and a partial row tile (523 rows, n = 12, nb = 3)', () => {
    const rng = new Rng(8);
    const rows = 523; // two blocks of 256 rows, then 11: one tile of 8 and one of 3
    const cols = 40;
    const P = i32(31, 2, 17, 8, 39, 0, 25, 12, 5, 36, 21, 14);
    const N = i32(3, 38, 9, 30, 1, 22, 16, 33, 27, 6, 11, 19);
    const B1 = randomArray(rng, 3 * 4 * 4);
    const B2 = randomArray(rng, 3 * 4 * 4);
    const a = randomArray(rng, 12, 0.05, 1);
    const W = randomArray(rng, rows * cols);
    const M = denseMonarch(B1, B2, 3, 4);
    const want = Float64Array.from(W);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < 12; i++) {
        let s = W[r * cols + N[i]!]! * a[i]!;
        for (let j = 0; j < 12; j++) s += W[r * cols + P[j]!]! * M.v[i * 12 + j]!;
        want[r * cols + N[i]!] = s;
      }
    }
    fuseInputColumns(W, cols, P, N, { B1, B2, a });
    expect(maxAbsDiff(W, want)).toBeLessThan(1e-6 * maxAbs(want));
  });

  it('output side matches a dense reference across column blocks (1100 columns, n = 6, nb = 2)', () => {
    const rng = new Rng(6);
    const rows = 14;
    const cols = 1100;
    const P = i32(13, 2, 7, 0, 9, 4);
    const N = i32(1, 12, 3, 8, 5, 10);
    const B1 = randomArray(rng, 18);
    const B2 = randomArray(rng, 18);
    const a = randomArray(rng, 6, 0.05, 1);
    const b = randomArray(rng, 6, 0.05, 1);
    const W = randomArray(rng, rows * cols);
    const M = denseMonarch(B1, B2, 2, 3);
    const want = Float64Array.from(W);
    for (let t = 0; t < cols; t++) {
      for (let i = 0; i < 6; i++) {
        let s = a[i]! * W[N[i]! * cols + t]!;
        for (let j = 0; j < 6; j++) s += M.v[i * 6 + j]! * W[P[j]! * cols + t]!;
        want[N[i]! * cols + t] = s;
        want[P[i]! * cols + t] = b[i]! * W[P[i]! * cols + t]!;
      }
    }
    fuseOutputRows(W, cols, P, N, { B1, B2, a }, b);
    expect(maxAbsDiff(W, want)).toBeLessThan(1e-6 * maxAbs(want));
  });
});

describe('identity operators and touched tensors', () => {
  const bitsOf = (v: Float32Array) => Array.from(new Uint32Array(v.buffer.slice(0)));

  it('fresh operators leave every bit in place (signed zeros, NaN payloads)', () => {
    const W = f32(-0, 1, 0, -0, 2, 3);
    const u = new Uint32Array(W.buffer);
    u[4] = 0x7fc01234; // NaN with a payload
    const before = bitsOf(W);
    const fresh = channelOp(i32(2), i32(0), f32(0.3), f32(0), f32(1), f32(1), f32(1), 1, 1);
    fuseGateOrUp(W, 2, fresh, 'gate_proj');
    fuseDownProjection(W, 2, channelOp(i32(1), i32(0), f32(0.3), f32(0), f32(1), f32(1), f32(1), 1, 1));
    fuseOutputRows(W, 2, i32(1), i32(0), { B1: f32(0.5), B2: f32(0), a: f32(1) }, f32(1));
    expect(bitsOf(W)).toEqual(before);
    expect(touchedTensors({ layer: 0, mlp: fresh }, spec({ mlpBias: true }))).toEqual([]);
  });

  it('a mix that rounds to zero keeps −0.0 where a = 1', () => {
    // M ≠ 0 structurally, but W[P] is zero, so M·W[P] = 0 and a = 1: N rows keep their bits.
    const W = f32(-0, -0, 0, 0);
    const before = bitsOf(W);
    fuseOutputRows(W, 2, i32(1), i32(0), { B1: f32(2), B2: f32(3), a: f32(1) }, f32(1));
    expect(bitsOf(W)).toEqual(before);
  });

  it('lists exactly the tensors a rule changes, by name', () => {
    const s = spec({ hiddenSize: 2, numHeads: 2, numKvHeads: 2, headDim: 1, intermediateSize: 2, qkvBias: true, oBias: true, mlpBias: false });
    const zero = f32(0);
    const head = (a: number, b: number, B2 = zero) => headOp(i32(1), i32(0), f32(1), B2, f32(a), f32(b), 1, 1);
    const ch = (a: number, bg: number, bu: number, B2 = zero) => channelOp(i32(1), i32(0), f32(1), B2, f32(a), f32(bg), f32(bu), 1, 1);
    const names = (ops: Omit<LayerOperators, 'layer'>, sp = s) => touchedTensors({ layer: 0, ...ops }, sp).map((t) => t.name);
    const A = 'model.layers.0.self_attn.';
    const F = 'model.layers.0.mlp.';
    expect(names({ attn: head(1, 1, f32(0.1)) })).toEqual([`${A}v_proj.weight`, `${A}v_proj.bias`, `${A}o_proj.weight`]);
    expect(names({ attn: head(1, 2) })).toEqual([`${A}v_proj.weight`, `${A}v_proj.bias`]);
    expect(names({ attn: head(0.9, 1) })).toEqual([`${A}v_proj.weight`, `${A}v_proj.bias`, `${A}o_proj.weight`]);
    expect(names({ mlp: ch(1, 1, 1.1) })).toEqual([`${F}up_proj.weight`]);
    expect(names({ mlp: ch(1, 0.9, 1) })).toEqual([`${F}gate_proj.weight`]);
    expect(names({ mlp: ch(1, 1, 1, f32(0.1)) })).toEqual([`${F}gate_proj.weight`, `${F}up_proj.weight`, `${F}down_proj.weight`]);
    expect(names({ mlp: ch(2, 1, 1) }, { ...s, mlpBias: true }))
      .toEqual([`${F}gate_proj.weight`, `${F}gate_proj.bias`, `${F}up_proj.weight`, `${F}up_proj.bias`, `${F}down_proj.weight`]);
    expect(names({ attn: head(1, 1), mlp: ch(1, 1, 1) })).toEqual([]);
  });
});

describe('fuseLayerTensor', () => {
  const s = spec({ hiddenSize: 2, numHeads: 4, numKvHeads: 2, headDim: 1, intermediateSize: 4, oBias: true, mlpBias: true });
  const ops: LayerOperators = {
    layer: 0,
    attn: headOp(i32(1), i32(0), f32(2), f32(1.5), f32(0.5), f32(1), 1, 1),
    mlp: channelOp(i32(2, 0), i32(3, 1), B1_2, B2_2, f32(2, 0.5), f32(1, 3), f32(1, 1), 1, 2),
  };
  const tensor = (role: LayerRole, param: 'weight' | 'bias' = 'weight') => findLayerTensor(s, 0, role, param)!;

  it('applies each tensor\'s rule from the architecture table and leaves q/k and o/down biases alone', () => {
    const o = f32(1, 2, 3, 4, 5, 6, 7, 8);
    expect(fuseLayerTensor(tensor('o_proj'), o, ops, s)).toBe(true);
    expect(Array.from(o)).toEqual([9.5, 13, 3, 4, 23.5, 27, 7, 8]);
    const down = f32(1, 2, 3, 4, 5, 6, 7, 8);
    expect(fuseLayerTensor(tensor('down_proj'), down, ops, s)).toBe(true);
    expect(Array.from(down)).toEqual([1, 7, 3, 13, 5, 25, 7, 33]);
    const gateBias = f32(1, 2, 3, 4);
    expect(fuseLayerTensor(tensor('gate_proj', 'bias'), gateBias, ops, s)).toBe(true);
    expect(Array.from(gateBias)).toEqual([3, 7, 3, 13]);
    const q = f32(1, 2, 3, 4, 5, 6, 7, 8);
    expect(fuseLayerTensor(tensor('q_proj'), q, ops, s)).toBe(false);
    expect(fuseLayerTensor(tensor('k_proj'), f32(1, 2, 3, 4), ops, s)).toBe(false);
    expect(fuseLayerTensor(tensor('o_proj', 'bias'), f32(1, 2), ops, s)).toBe(false);
    expect(fuseLayerTensor(tensor('down_proj', 'bias'), f32(1, 2), ops, s)).toBe(false);
    expect(fuseLayerTensor(tensor('input_layernorm'), f32(1, 2), ops, s)).toBe(false);
    expect(Array.from(q)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('checks sizes and layers', () => {
    expect(() => fuseLayerTensor(tensor('gate_proj'), new Float32Array(6), ops, s)).toThrow(RangeError);
    expect(() => fuseLayerTensor(findLayerTensor(s, 1, 'gate_proj')!, new Float32Array(8), ops, { ...s, numLayers: 2 })).toThrow(RangeError);
  });
});
