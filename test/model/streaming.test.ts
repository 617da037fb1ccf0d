// Behaviour of the layer-streaming forward beyond the reference numbers: chunking, vocab blocks,
// loss masks, mixed lengths, memory planning, hooks at the documented points, refusals.
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, ResourceLimitError, UnsupportedModelError } from '../../src/errors.js';
import { selectBackend } from '../../src/model/backend.js';
import type { LayerActivations, LayerHooks, LayerObserver } from '../../src/model/layer-hooks.js';
import { estimateForwardMemory, planForward } from '../../src/model/memory-estimate.js';
import { ResidentWeightSource, disposeModelWeights, forwardLogits, loadModelWeights, type ModelWeights } from '../../src/model/model-weights.js';
import { computeLogits, evaluateNll } from '../../src/model/streaming-forward.js';
import { loadReference, maxAbsDiff, maxRelDiff, openModel, sumsqObserver, type Reference } from './helpers.js';

let mha: Awaited<ReturnType<typeof openModel>>;
let stories: Awaited<ReturnType<typeof openModel>>;
let ref: Reference;
let storiesRef: Reference;
let short: Int32Array[];

beforeAll(async () => {
  await selectBackend('wasm');
  mha = await openModel('fixtures/llama-mha-f32');
  stories = await openModel('fixtures/stories260K');
  ref = await loadReference('llama-mha-f32');
  storiesRef = await loadReference('stories260K');
  short = ref.sequences.slice(0, 4).map((s) => s.subarray(0, 32));
});
afterAll(async () => {
  await mha.checkpoint.close();
  await stories.checkpoint.close();
});

describe('streaming forward', () => {
  it('gives the same NLL whatever the chunk size and vocab block size', async () => {
    const whole = await evaluateNll(mha.source, short);
    expect(whole.plan.chunkSequences).toBe(4);
    expect(whole.plan.vocabBlockRows).toBe(2048);
    const tight = estimateForwardMemory(mha.spec, 1, 32, { totalSequences: 4, vocabBlockRows: 1024 }).totalBytes;
    const chunked = await evaluateNll(mha.source, short, { maxMemoryBytes: tight });
    expect(chunked.plan.chunkSequences).toBe(1);
    expect(chunked.plan.vocabBlockRows).toBe(1024);
    expect(Math.abs(chunked.meanNll - whole.meanNll)).toBeLessThan(1e-5);
    const batched = await evaluateNll(mha.source, short, { batchSize: 3 });
    expect(batched.plan.chunkSequences).toBe(3);
    expect(maxAbsDiff(batched.perSequence.map((p) => p.meanNll), whole.perSequence.map((p) => p.meanNll))).toBeLessThan(1e-5);
  });

  it('frees every tensor it and its observers create, also when an observer fails', async () => {
    const tight = estimateForwardMemory(mha.spec, 1, 32, { totalSequences: 4, vocabBlockRows: 1024 }).totalBytes;
    const stats = sumsqObserver(mha.spec, 4);
    const before = tf.memory().numTensors;
    const chunked = await evaluateNll(mha.source, short, { maxMemoryBytes: tight, observe: stats.observe });
    expect(chunked.plan.chunkSequences).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
    expect(stats.head.every((v) => v > 0)).toBe(true);
    const failing = evaluateNll(mha.source, short, {
      maxMemoryBytes: tight,
      observe: (a) => ({ tensors: [tf.sum(a.gate)], consume: () => { if (a.layer === 1) throw new RangeError('observer failed'); } }),
    });
    await expect(failing).rejects.toThrow('observer failed');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an interrupt (a signal handled between chunks, as SIGINT is) stops the pass within the layer', async () => {
    // Reads on wasm resolve as microtasks: unless the pass yields to the event loop between
    // chunks, an abort scheduled while layer 0's first chunk runs would only be seen at the
    // next layer (on a 7B model, minutes later).
    const abort = new AbortController();
    const layers: number[] = [];
    const seen: number[] = [];
    const run = evaluateNll(mha.source, short, {
      batchSize: 1,
      signal: abort.signal,
      observe: (a) => {
        seen.push(a.layer);
        if (seen.length === 1) setImmediate(() => abort.abort(new Error('interrupted by SIGINT')));
      },
      onProgress: (e) => { if (e.stage === 'layer') layers.push(e.done); },
    });
    await expect(run).rejects.toThrow('interrupted by SIGINT');
    expect(layers).toEqual([]);
    expect(seen).toEqual([0]);
  });

  it('counts only the targets a loss mask keeps', async () => {
    const all = await evaluateNll(mha.source, short, { returnTargetLogprobs: true });
    const masks = short.map((s, i) => Array.from(s, (_, t) => (t >= 10 + i ? 1 : 0)));
    const masked = await evaluateNll(mha.source, short, { lossMasks: masks, returnTargetLogprobs: true });
    let sum = 0;
    let n = 0;
    all.targetLogprobs!.forEach((lp, i) => lp.forEach((v, t) => { if (t + 1 >= 10 + i) { sum -= v; n++; } }));
    expect(masked.tokens).toBe(n);
    expect(masked.meanNll).toBeCloseTo(sum / n, 6);
    expect(Number.isNaN(masked.targetLogprobs![0]![0]!)).toBe(true);
  });

  it('handles sequences of different lengths in one call', async () => {
    const mixed = [ref.sequences[0]!.subarray(0, 20), ref.sequences[1]!.subarray(0, 12), ref.sequences[2]!.subarray(0, 20)];
    const together = await computeLogits(mha.source, mixed);
    for (const [i, s] of mixed.entries()) {
      const [alone] = await computeLogits(mha.source, [s]);
      expect(maxAbsDiff(together[i]!, alone!)).toBeLessThan(1e-5);
    }
  });

  it('refuses out-of-vocabulary ids, impossible budgets and sequences past a sliding window', async () => {
    await expect(evaluateNll(mha.source, [Int32Array.from([1, 2048, 3])])).rejects.toThrow(InputError);
    await expect(evaluateNll(mha.source, short, { maxMemoryBytes: 1_000_000 })).rejects.toThrow(ResourceLimitError);
    const { model } = await loadModelWeights(stories.checkpoint);
    const windowed = new ResidentWeightSource({ ...model, spec: { ...model.spec, slidingWindow: 16 } });
    await expect(computeLogits(windowed, [storiesRef.sequences[0]!.subarray(0, 16)])).resolves.toHaveLength(1);
    await expect(computeLogits(windowed, [storiesRef.sequences[0]!.subarray(0, 17)])).rejects.toThrow(UnsupportedModelError);
    disposeModelWeights(model);
  });

  it('plans memory flat in the number of layers and monotone in the chunk size', () => {
    const deep = { ...mha.spec, numLayers: 40 };
    expect(estimateForwardMemory(deep, 4, 128).totalBytes).toBe(estimateForwardMemory(mha.spec, 4, 128).totalBytes);
    expect(estimateForwardMemory(mha.spec, 8, 128).activationBytes).toBeGreaterThan(estimateForwardMemory(mha.spec, 4, 128).activationBytes);
    const budget = estimateForwardMemory(mha.spec, 5, 128, { totalSequences: 16, vocabBlockRows: 1024 }).totalBytes;
    expect(planForward(mha.spec, 16, 128, budget).chunkSequences).toBe(5);
  });

  it('a resident model evaluates exactly like the streamed checkpoint', async () => {
    const { model } = await loadModelWeights(mha.checkpoint);
    const resident = await evaluateNll(new ResidentWeightSource(model), short);
    const streamed = await evaluateNll(mha.source, short);
    expect(resident.meanNll).toBe(streamed.meanNll);
    disposeModelWeights(model);
  });
});

describe('layer hooks act at the documented points', () => {
  let model: ModelWeights;
  const ids = () => tf.tensor2d([Array.from(storiesRef.sequences[0]!.subarray(0, 16))], [1, 16], 'int32');
  const logitsWith = (hooks?: LayerHooks, observe?: LayerObserver) =>
    tf.tidy(() => forwardLogits(model, ids(), { ...(hooks ? { hooks: () => hooks } : {}), ...(observe ? { observe } : {}) }).dataSync());
  beforeAll(async () => {
    model = (await loadModelWeights(stories.checkpoint)).model;
  });
  afterAll(() => disposeModelWeights(model));

  it('a transformed v_proj weight is what the attention uses: the observer sees the transformed attention', () => {
    const seen: number[][] = [];
    const observe = (label: number) => (a: LayerActivations) => { if (a.layer === 0) seen[label] = Array.from(tf.sum(tf.square(a.attention)).dataSync()); };
    const base = logitsWith(undefined, observe(0));
    const doubled = logitsWith({ transformWeight: (k, w) => (k === 'v_proj' ? tf.mul(w, 2) : w) }, observe(1));
    expect(maxAbsDiff(doubled, base)).toBeGreaterThan(1e-2);
    // The attention output is linear in the values: doubling W_v doubles it, its sum of squares ×4.
    expect(seen[1]![0]! / seen[0]![0]!).toBeCloseTo(4, 4);
  });

  it('transformWeight reaches all seven projections', () => {
    const keys = new Set<string>();
    logitsWith({ transformWeight: (k, w) => { keys.add(k); return w; } });
    expect([...keys].sort()).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
  });

  it('the streaming forward applies per-layer hooks and reports which sequences a chunk holds', async () => {
    const hooks = (layer: number): LayerHooks | undefined => (layer === 2 ? { transformWeight: (k, w) => (k === 'v_proj' ? tf.mul(w, 0.5) : w) } : undefined);
    const [s0, s1] = storiesRef.sequences as [Int32Array, Int32Array];
    const seqs = [s0.subarray(0, 16), s1.subarray(0, 16), s0.subarray(16, 32)];
    const stats = sumsqObserver(stories.spec, 3);
    const calls: number[][] = [];
    const streamed = await computeLogits(stories.source, seqs, { hooks, batchSize: 2, observe: (a) => { if (a.layer === 0) calls.push([...a.sequenceIndices]); return stats.observe(a); } });
    expect(calls).toEqual([[0, 1], [2]]);
    const inMemory = tf.tidy(() => forwardLogits(model, tf.tensor2d(seqs.map((s) => Array.from(s)), [3, 16], 'int32'), { hooks }).dataSync());
    const flat = new Float32Array(3 * 16 * 512);
    streamed.forEach((l, i) => flat.set(l, i * 16 * 512));
    expect(maxAbsDiff(flat, inMemory)).toBeLessThan(1e-5);
    expect(stats.head.every((v) => v > 0)).toBe(true);
  });
});
