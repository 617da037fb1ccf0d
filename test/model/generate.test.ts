import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { selectBackend } from '../../src/model/backend.js';
import { generate, PREFILL_CHUNK, rowSeed } from '../../src/model/generate.js';
import { ResidentWeightSource, disposeModelWeights, loadModelWeights, type ModelWeights } from '../../src/model/model-weights.js';
import { argmax, chooseToken } from '../../src/model/sampling.js';
import { computeLogits } from '../../src/model/streaming-forward.js';
import { Rng } from '../../src/util/rng.js';
import { openModel } from './helpers.js';

let stories: Awaited<ReturnType<typeof openModel>>;
let model: ModelWeights;
const prompt = Int32Array.from([1, 403, 261]);

beforeAll(async () => {
  await selectBackend('wasm');
  stories = await openModel('fixtures/stories260K');
  model = (await loadModelWeights(stories.checkpoint)).model;
});
afterAll(async () => {
  disposeModelWeights(model);
  await stories.checkpoint.close();
});

describe('generate', () => {
  it('refuses logits that overflow (exit 6) instead of sampling a token from them', async () => {
    // Finite weights whose product overflows float32: the final norm scaled to 3e38.
    const tensors = new Map(model.tensors);
    const norm = tensors.get('model.norm.weight')!;
    const huge = tf.fill(norm.shape, 3e38);
    tensors.set('model.norm.weight', huge);
    try {
      const error = await generate(new ResidentWeightSource({ spec: model.spec, tensors }), [prompt], { maxNewTokens: 2 }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'NON_FINITE_LOGITS', exit: 6, message: expect.stringMatching(/^the logits are not finite \(sequence 0, token id \d+: (-?Infinity|NaN)\) at position 2/) });
    } finally {
      huge.dispose();
    }
  });

  it('returns to the event loop between tokens, so a signal handler (Ctrl-C) can stop a resident generation', async () => {
    // The abort comes from a macrotask, as a SIGINT handler's would: with resident weights on
    // cpu/wasm a step never waits on I/O, so without a yield it would run only after the last token.
    const abort = new AbortController();
    const steps: number[] = [];
    const error = await generate(new ResidentWeightSource(model), [prompt], {
      maxNewTokens: 40,
      signal: abort.signal,
      onStep: (s) => { steps.push(s); if (s === 3) setImmediate(() => abort.abort(new Error('interrupted by SIGINT'))); },
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ message: 'interrupted by SIGINT' });
    expect(steps).toEqual([1, 2, 3]);
  });

  it('greedy decoding with the cache picks the argmax of a full forward at every step', async () => {
    const out = await generate(new ResidentWeightSource(model), [prompt], { maxNewTokens: 12 });
    const seq = out.sequences[0]!;
    expect(seq.length).toBe(15);
    const [logits] = await computeLogits(stories.source, [seq]);
    const V = stories.spec.vocabSize;
    for (let t = prompt.length - 1; t < seq.length - 1; t++) expect(argmax(logits!.subarray(t * V, (t + 1) * V))).toBe(seq[t + 1]);
  });

  it(`a prompt longer than ${PREFILL_CHUNK} positions is run in pieces; greedy tokens still follow the argmax of a full forward`, async () => {
    const long = Int32Array.from({ length: 2 * PREFILL_CHUNK + 76 }, (_, i) => (i === 0 ? 1 : 3 + ((i * 37) % 500)));
    const out = await generate(new ResidentWeightSource(model), [long], { maxNewTokens: 4 });
    const seq = out.sequences[0]!;
    const [logits] = await computeLogits(stories.source, [seq]);
    const V = stories.spec.vocabSize;
    for (let t = long.length - 1; t < seq.length - 1; t++) expect(argmax(logits!.subarray(t * V, (t + 1) * V)), `position ${t}`).toBe(seq[t + 1]);
  });

  it('gives the same tokens from the streamed checkpoint and the resident model, alone or batched', async () => {
    const other = Int32Array.from([1, 65, 300]);
    const resident = await generate(new ResidentWeightSource(model), [prompt, other], { maxNewTokens: 8 });
    const streamed = await generate(stories.source, [other], { maxNewTokens: 8 });
    expect(Array.from(resident.sequences[1]!)).toEqual(Array.from(streamed.sequences[0]!));
  });

  it('samples reproducibly from a seed; a tiny top-p is greedy', async () => {
    const src = new ResidentWeightSource(model);
    const a = await generate(src, [prompt], { maxNewTokens: 16, temperature: 1, seed: 5 });
    const b = await generate(src, [prompt], { maxNewTokens: 16, temperature: 1, seed: 5 });
    const c = await generate(src, [prompt], { maxNewTokens: 16, temperature: 1, seed: 6 });
    expect(Array.from(a.generated[0]!)).toEqual(Array.from(b.generated[0]!));
    expect(Array.from(a.generated[0]!)).not.toEqual(Array.from(c.generated[0]!));
    const nucleus = await generate(src, [prompt], { maxNewTokens: 10, temperature: 0.8, topP: 1e-6, seed: 1 });
    const greedy = await generate(src, [prompt], { maxNewTokens: 10 });
    expect(Array.from(nucleus.generated[0]!)).toEqual(Array.from(greedy.generated[0]!));
  });

  it('each row samples from its own seed, so a prompt’s tokens do not depend on its batch; row 0 of a seed is the seed itself', async () => {
    const src = new ResidentWeightSource(model);
    const other = Int32Array.from(prompt).reverse();
    const options = { maxNewTokens: 12, temperature: 1 };
    const batched = await generate(src, [prompt, other], { ...options, seed: 7 });
    const alone = await generate(src, [other], { ...options, seeds: [rowSeed(7, 1)] });
    expect(Array.from(batched.generated[1]!)).toEqual(Array.from(alone.generated[0]!));
    const first = await generate(src, [prompt], { ...options, seeds: [7] });
    expect(Array.from(batched.generated[0]!)).toEqual(Array.from(first.generated[0]!));
    // Two rows of one prompt and one seed differ: rows do not share a stream.
    const twice = await generate(src, [prompt, prompt], { ...options, seed: 7 });
    expect(Array.from(twice.generated[0]!)).not.toEqual(Array.from(twice.generated[1]!));
    expect([rowSeed(7, 0), rowSeed(2 ** 32 - 1, 1)]).toEqual([7, (2 ** 32 - 1 + 0x9e3779b9) % 2 ** 32]);
  });

  it('stops a sequence at its first stop token, which is kept', async () => {
    const src = new ResidentWeightSource(model);
    const free = await generate(src, [prompt], { maxNewTokens: 10 });
    const stopId = free.generated[0]![4]!;
    const first = free.generated[0]!.indexOf(stopId);
    const stopped = await generate(src, [prompt], { maxNewTokens: 10, stopTokenIds: [stopId] });
    expect(stopped.stopped[0]).toBe(true);
    expect(Array.from(stopped.generated[0]!)).toEqual(Array.from(free.generated[0]!.subarray(0, first + 1)));
  });

  it('refuses prompts of different lengths and bad sampling settings', async () => {
    const src = new ResidentWeightSource(model);
    await expect(generate(src, [prompt, prompt.subarray(0, 2)], { maxNewTokens: 2 })).rejects.toThrow(UsageError);
    await expect(generate(src, [prompt], { maxNewTokens: 2, topP: 0 })).rejects.toThrow(/top-p/);
    await expect(generate(src, [prompt], { maxNewTokens: 2, temperature: -1 })).rejects.toThrow(/temperature/);
  });
});

describe('chooseToken', () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.2)];
  it('argmax takes the first of equal maxima', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(chooseToken([0, 2, 2], { temperature: 0, topP: 1 }, new Rng(1))).toBe(1);
  });
  it('top-p keeps the most probable tokens reaching p (transformers semantics)', () => {
    const rng = new Rng(3);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3000; i++) counts[chooseToken(logits, { temperature: 1, topP: 0.6 }, rng)]!++;
    expect(counts[2]).toBe(0);
    expect(counts[0]! / 3000).toBeGreaterThan(0.55); // 0.5 / 0.8 = 0.625
    expect(counts[0]! / 3000).toBeLessThan(0.7);
    for (let i = 0; i < 200; i++) expect(chooseToken(logits, { temperature: 1, topP: 0.45 }, rng)).toBe(0);
  });
  it('top-p ties at the cut keep the higher indices, as transformers (stable ascending sort)', () => {
    const kept = (p: number) => {
      const seen = new Set<number>();
      const rng = new Rng(5);
      for (let i = 0; i < 400; i++) seen.add(chooseToken([0, 0, 0, 0], { temperature: 1, topP: p }, rng));
      return [...seen].sort();
    };
    expect(kept(0.5)).toEqual([2, 3]);
    expect(kept(0.6)).toEqual([1, 2, 3]);
  });

  it('top-k keeps the k most probable tokens (ties at the k-th included), renormalised before top-p, as transformers', () => {
    const seen = (opts: { topK: number; topP: number }, ls: number[] = logits) => {
      const rng = new Rng(11);
      const counts = new Map<number, number>();
      for (let i = 0; i < 3000; i++) { const t = chooseToken(ls, { temperature: 1, ...opts }, rng); counts.set(t, (counts.get(t) ?? 0) + 1); }
      return counts;
    };
    const k2 = seen({ topK: 2, topP: 1 });
    expect([...k2.keys()].sort()).toEqual([0, 1]);
    expect(k2.get(0)! / 3000).toBeGreaterThan(0.58); // 0.5 / 0.8 = 0.625
    expect(k2.get(0)! / 3000).toBeLessThan(0.67);
    expect([...seen({ topK: 1, topP: 1 }, [0, 2, 2, 1]).keys()].sort()).toEqual([1, 2]); // a tie at the k-th stays
    // Renormalised: 0.625 / 0.375, so top-p 0.7 keeps both (on the unrenormalised 0.5 / 0.3 it would drop token 1).
    expect([...seen({ topK: 2, topP: 0.7 }).keys()].sort()).toEqual([0, 1]);
    expect([...seen({ topK: 0, topP: 0.7 }).keys()].sort()).toEqual([0, 1]);
    expect([...seen({ topK: 5, topP: 1 }).keys()].sort()).toEqual([0, 1, 2]);
  });

  it('samples proportionally to softmax(logits / T)', () => {
    const rng = new Rng(9);
    const counts = [0, 0, 0];
    for (let i = 0; i < 6000; i++) counts[chooseToken(logits, { temperature: 1, topP: 1 }, rng)]!++;
    expect(counts[1]! / 6000).toBeGreaterThan(0.27);
    expect(counts[1]! / 6000).toBeLessThan(0.33);
  });

  it('a temperature so small that logits / T overflow samples the argmax (not index 0 from NaN probabilities)', () => {
    const rng = new Rng(1);
    const wide = Float32Array.from([-5, 3, 7.5, 2]);
    for (const temperature of [1e-320, 1e-300, 1e-12]) expect(chooseToken(wide, { temperature, topP: 1 }, rng), String(temperature)).toBe(2);
  });
});
