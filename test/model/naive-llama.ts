// An independent, deliberately plain LLaMA forward pass in float64 JavaScript loops (no tfjs,
// no code shared with src/model beyond the config parser), used as the truth for config
// variants the transformers references do not cover: rope scaling, biases.
import type { ModelSpec } from '../../src/model/model-spec.js';

type Weights = ReadonlyMap<string, Float32Array>;

/** y[o] = Σ_i W[o, i] x[i] + b[o], W row-major [out, in]. */
function matVec(W: Float32Array, x: Float64Array, out: number, bias?: Float32Array): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = bias ? bias[o]! : 0;
    for (let i = 0; i < n; i++) s += W[o * n + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  const r = 1 / Math.sqrt(ms / x.length + eps);
  return x.map((v, i) => v * r * w[i]!);
}

/** Rotary frequencies straight from the definitions (Su et al.; linear interpolation; Meta's llama3 apply_scaling). */
export function naiveInverseFrequencies(spec: ModelSpec): Float64Array {
  const dh = spec.headDim;
  const r = spec.rope;
  const inv = new Float64Array(dh / 2);
  for (let j = 0; j < dh / 2; j++) {
    const freq = 1 / r.theta ** ((2 * j) / dh);
    if (r.type === 'default') inv[j] = freq;
    else if (r.type === 'linear') inv[j] = freq / r.factor!;
    else {
      const lowWavelen = r.originalMaxPositionEmbeddings! / r.lowFreqFactor!;
      const highWavelen = r.originalMaxPositionEmbeddings! / r.highFreqFactor!;
      const wavelen = (2 * Math.PI) / freq;
      if (wavelen < highWavelen) inv[j] = freq;
      else if (wavelen > lowWavelen) inv[j] = freq / r.factor!;
      else {
        const smooth = (r.originalMaxPositionEmbeddings! / wavelen - r.lowFreqFactor!) / (r.highFreqFactor! - r.lowFreqFactor!);
        inv[j] = ((1 - smooth) * freq) / r.factor! + smooth * freq;
      }
    }
  }
  return inv;
}

/** Rotates (v[j], v[j + dh/2]) by angle pos·inv[j], per head. */
function rotate(v: Float64Array, heads: number, dh: number, pos: number, inv: Float64Array): void {
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < dh / 2; j++) {
      const a = v[h * dh + j]!;
      const b = v[h * dh + j + dh / 2]!;
      const c = Math.cos(pos * inv[j]!);
      const s = Math.sin(pos * inv[j]!);
      v[h * dh + j] = a * c - b * s;
      v[h * dh + j + dh / 2] = b * c + a * s;
    }
  }
}

/** Logits [T, V] of one sequence. */
export function naiveLogits(spec: ModelSpec, w: Weights, ids: readonly number[]): Float64Array {
  const D = spec.hiddenSize;
  const H = spec.numHeads;
  const nKv = spec.numKvHeads;
  const dh = spec.headDim;
  const I = spec.intermediateSize;
  const T = ids.length;
  const g = (n: string) => w.get(n)!;
  const inv = naiveInverseFrequencies(spec);
  const embed = g('model.embed_tokens.weight');
  let xs = ids.map((id) => Float64Array.from(embed.subarray(id * D, (id + 1) * D)));
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const h = rmsNorm(xs[t]!, g(`${p}input_layernorm.weight`), spec.rmsNormEps);
      const q = matVec(g(`${p}self_attn.q_proj.weight`), h, H * dh, w.get(`${p}self_attn.q_proj.bias`));
      const k = matVec(g(`${p}self_attn.k_proj.weight`), h, nKv * dh, w.get(`${p}self_attn.k_proj.bias`));
      rotate(q, H, dh, t, inv);
      rotate(k, nKv, dh, t, inv);
      qs.push(q);
      ks.push(k);
      vs.push(matVec(g(`${p}self_attn.v_proj.weight`), h, nKv * dh, w.get(`${p}self_attn.v_proj.bias`)));
    }
    xs = xs.map((x, t) => {
      const attn = new Float64Array(H * dh);
      for (let hh = 0; hh < H; hh++) {
        const kv = Math.floor(hh / (H / nKv));
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < dh; d++) dot += qs[t]![hh * dh + d]! * ks[s]![kv * dh + d]!;
          scores[s] = dot / Math.sqrt(dh);
          max = Math.max(max, scores[s]!);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += (scores[s] = Math.exp(scores[s]! - max));
        for (let s = 0; s <= t; s++) for (let d = 0; d < dh; d++) attn[hh * dh + d]! += (scores[s]! / z) * vs[s]![kv * dh + d]!;
      }
      const o = matVec(g(`${p}self_attn.o_proj.weight`), attn, D, w.get(`${p}self_attn.o_proj.bias`));
      const x1 = x.map((v, i) => v + o[i]!);
      const h2 = rmsNorm(x1, g(`${p}post_attention_layernorm.weight`), spec.rmsNormEps);
      const gate = matVec(g(`${p}mlp.gate_proj.weight`), h2, I, w.get(`${p}mlp.gate_proj.bias`));
      const up = matVec(g(`${p}mlp.up_proj.weight`), h2, I, w.get(`${p}mlp.up_proj.bias`));
      const act = gate.map((v, i) => (v / (1 + Math.exp(-v))) * up[i]!);
      const down = matVec(g(`${p}mlp.down_proj.weight`), act, D, w.get(`${p}mlp.down_proj.bias`));
      return x1.map((v, i) => v + down[i]!);
    });
  }
  const head = w.get('lm_head.weight') ?? embed;
  const V = spec.vocabSize;
  const out = new Float64Array(T * V);
  xs.forEach((x, t) => out.set(matVec(head, rmsNorm(x, g('model.norm.weight'), spec.rmsNormEps), V), t * V));
  return out;
}
