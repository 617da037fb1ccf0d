/**
 * Choosing the next token from logits: greedy (first index of the maximum, as torch.argmax),
 * or sampling with temperature, top-k and nucleus (top-p) filtering as transformers' logits
 * warpers do it, in that order (top-k keeps the tokens at least as probable as the k-th, ties
 * included; top-p then keeps, of what is left and renormalised, the most probable tokens whose
 * cumulative probability reaches p, at least one). Seeded, so a seed gives the same text every run.
 */
import type { Rng } from '../util/rng.js';

export interface SamplingOptions {
  /** 0 → greedy. */
  temperature: number;
  /** 1 → no nucleus filtering. */
  topP: number;
  /** 0 or absent → no top-k filtering. */
  topK?: number;
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export function chooseToken(logits: ArrayLike<number>, options: SamplingOptions, rng: Rng): number {
  if (options.temperature === 0) return argmax(logits);
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[i]!);
  const probs = new Float64Array(V);
  let total = 0;
  // (logit − max) / T, not logit / T − max / T: a tiny temperature sends the first to −∞ or 0
  // (so sampling tends to greedy), the second to ∞ − ∞ = NaN.
  for (let i = 0; i < V; i++) {
    probs[i] = Math.exp((logits[i]! - max) / options.temperature);
    total += probs[i]!;
  }
  for (let i = 0; i < V; i++) probs[i]! /= total;
  let candidates = Array.from({ length: V }, (_, i) => i);
  const topK = options.topK ?? 0;
  if (topK > 0 && topK < V) {
    const kth = Float64Array.from(probs).sort()[V - topK]!;
    candidates = candidates.filter((i) => probs[i]! >= kth);
    // What is left is renormalised before top-p, as transformers' warpers (−inf logits) do.
    let kept = 0;
    for (const i of candidates) kept += probs[i]!;
    for (const i of candidates) probs[i]! /= kept;
  }
  if (options.topP < 1) {
    // transformers: a stable ascending sort (equal probabilities by index), drop tokens whose
    // cumulative probability ≤ 1 − top_p, keep the top one; among equal probabilities at the
    // cut the lower indices go first, as there.
    const ascending = candidates.sort((a, b) => probs[a]! - probs[b]! || a - b);
    let cum = 0;
    let firstKept = ascending.length - 1;
    for (let k = 0; k < ascending.length - 1; k++) {
      cum += probs[ascending[k]!]!;
      if (cum > 1 - options.topP) { firstKept = k; break; }
    }
    // The draw walks the kept tokens in vocabulary order (as torch.multinomial over the filtered
    // distribution does), not in probability order: two backends whose float32 logits differ in
    // the last bits then swap no near-equal tokens, and one seed gives one continuation.
    candidates = ascending.slice(firstKept).sort((a, b) => a - b);
  }
  let mass = 0;
  for (const i of candidates) mass += probs[i]!;
  let u = rng.next() * mass;
  for (const i of candidates) {
    u -= probs[i]!;
    if (u < 0) return i;
  }
  // Rounding left u ≥ 0 after the last candidate: the most probable kept token.
  return candidates.reduce((best, i) => (probs[i]! > probs[best]! ? i : best), candidates[0]!);
}
