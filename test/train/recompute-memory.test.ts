// What activation recomputation saves, measured: the high-water mark of tfjs's tensor memory
// (the engine's byte count of live tensor data) during one training micro-batch (forward and
// backward, every tensor of the model trainable) and one held-out forward of stories260K at
// 2 × 256 tokens (APEX_RECOMPUTE_B / APEX_RECOMPUTE_T to change), where the activations are most
// of the memory (the attention scores grow with the sequence), with and without recomputation, on
// cpu and wasm; against the estimate's activation and logit terms (stage-memory.ts). The step
// times are printed (cpu: one round, so only indicative; wasm: the median of 3).
//
// The engine's count is about 1.6-1.7 times the estimate's activations + logits on this shape,
// with and without recomputation alike (the estimate was fitted to the wasm heap's live
// allocations on other shapes, docs/reliability.md); what is checked here is the drop and that
// the two stay in proportion.
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { selectBackend } from '../../src/model/backend.js';
import { disposeModelWeights, loadModelWeights } from '../../src/model/model-weights.js';
import { modelLoss } from '../../src/train/model-loss.js';
import { estimateTrainingMemory } from '../../src/train/stage-memory.js';

/** Runs f, returning the highest engine.state.numBytes seen while it ran, over what was live before it. */
function peakBytesOf(f: () => void): number {
  const state = tf.engine().state;
  const before = state.numBytes;
  let current = before;
  let peak = before;
  Object.defineProperty(state, 'numBytes', {
    configurable: true,
    get: () => current,
    set: (v: number) => {
      current = v;
      if (v > peak) peak = v;
    },
  });
  try {
    f();
  } finally {
    delete (state as unknown as Record<string, unknown>).numBytes;
    state.numBytes = current;
  }
  return peak - before;
}

const B = Number(process.env.APEX_RECOMPUTE_B ?? 2);
const T = Number(process.env.APEX_RECOMPUTE_T ?? 256);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

interface Measured {
  /** Peak over what was live before: a training micro-batch (forward and backward), and a held-out forward (no tape). */
  train: { plain: number; recomputed: number };
  evaluation: { plain: number; recomputed: number };
  /** Median seconds of a training micro-batch. */
  seconds: { plain: number; recomputed: number };
  estimate: { plain: number; recomputed: number };
}

async function measure(backend: 'cpu' | 'wasm', rounds: number): Promise<Measured> {
  await selectBackend(backend);
  const checkpoint = await Checkpoint.open('fixtures/stories260K');
  const { model } = await loadModelWeights(checkpoint, { trainable: () => true, variablePrefix: `recompute-memory-${backend}/` });
  await checkpoint.close();
  const ids = tf.tidy(() => tf.cast(tf.mod(tf.range(0, B * T), model.spec.vocabSize), 'int32').reshape([B, T])) as tf.Tensor2D;
  const mask = tf.ones([B, T]) as tf.Tensor2D;
  const variables = [...model.tensors.values()] as tf.Variable[];
  const step = (recompute: boolean) => {
    const { value, grads } = tf.engine().gradients(() => modelLoss(model, ids, mask, { recompute }), variables, undefined, true);
    tf.dispose([value, ...grads]);
  };
  const out: Measured = { train: { plain: 0, recomputed: 0 }, evaluation: { plain: 0, recomputed: 0 }, seconds: { plain: 0, recomputed: 0 }, estimate: { plain: 0, recomputed: 0 } };
  const seconds = { plain: [] as number[], recomputed: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    for (const recompute of [false, true]) {
      const key = recompute ? 'recomputed' : 'plain';
      const t0 = performance.now();
      out.train[key] = peakBytesOf(() => step(recompute));
      seconds[key].push((performance.now() - t0) / 1000);
      out.evaluation[key] = peakBytesOf(() => tf.dispose(tf.tidy(() => modelLoss(model, ids, mask, { recompute, reduction: 'sum' }))));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  out.seconds = { plain: median(seconds.plain), recomputed: median(seconds.recomputed) };
  const entries = variables.reduce((n, v) => n + v.size, 0);
  for (const recompute of [false, true]) {
    // The training peak alone (the estimate's evaluation is measured apart above).
    const e = estimateTrainingMemory(model.spec, { batch: B, evalBatch: 1, evalSeqLen: 1, seqLen: T, trainableEntries: entries, largestTrainable: 0, operators: false, lora: false, recompute });
    out.estimate[recompute ? 'recomputed' : 'plain'] = e.activationBytes + e.logitBytes;
  }
  tf.dispose([ids, mask]);
  disposeModelWeights(model);
  console.log(
    `${backend}, stories260K, ${B} × ${T} tokens, every tensor trainable: peak tensor memory of a training micro-batch ${mib(out.train.plain)} without recomputation, ` +
      `${mib(out.train.recomputed)} with (the estimate's activations + logits: ${mib(out.estimate.plain)} / ${mib(out.estimate.recomputed)}); ` +
      `of a held-out forward ${mib(out.evaluation.plain)} / ${mib(out.evaluation.recomputed)}; ` +
      `a micro-batch took ${out.seconds.plain.toFixed(3)} s / ${out.seconds.recomputed.toFixed(3)} s (×${(out.seconds.recomputed / out.seconds.plain).toFixed(2)}, median of ${rounds})`,
  );
  return out;
}

describe(`activation recomputation: memory and time of a training micro-batch (stories260K, ${B} × ${T})`, () => {
  for (const [backend, rounds] of [['cpu', 1], ['wasm', 3]] as const) {
    it(`${backend}: keeps the layer inputs instead of every intermediate; the peak falls as the estimate says`, async () => {
      const m = await measure(backend, rounds);
      expect(m.train.recomputed).toBeLessThan(0.3 * m.train.plain);
      expect(m.evaluation.recomputed).toBeLessThan(0.3 * m.evaluation.plain);
      // In proportion: what recomputation keeps of the peak, measured and estimated.
      expect(m.train.recomputed / m.train.plain / (m.estimate.recomputed / m.estimate.plain)).toBeGreaterThan(0.7);
      expect(m.train.recomputed / m.train.plain / (m.estimate.recomputed / m.estimate.plain)).toBeLessThan(1.3);
      for (const key of ['plain', 'recomputed'] as const) {
        const ratio = m.train[key] / m.estimate[key];
        expect(ratio, `measured / estimated, ${key}`).toBeGreaterThan(0.5);
        expect(ratio, `measured / estimated, ${key}`).toBeLessThan(2);
      }
    }, 300_000);
  }
});
