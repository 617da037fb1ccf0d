// The reference checks of the forward pass, run once per backend (reference-*.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, type BackendName } from '../../src/model/backend.js';
import { generate } from '../../src/model/generate.js';
import { computeLogits, evaluateNll } from '../../src/model/streaming-forward.js';
import { FIXTURES, loadReference, maxAbsDiff, maxRelDiff, openModel, sumsqObserver, type Reference } from './helpers.js';

export function referenceSuite(backend: BackendName): void {
  describe(`forward pass on ${backend} vs transformers float64 references`, () => {
    beforeAll(async () => {
      await selectBackend(backend);
    });

    for (const name of FIXTURES) {
      describe(name, () => {
        let ref: Reference;
        let model: Awaited<ReturnType<typeof openModel>>;
        beforeAll(async () => {
          ref = await loadReference(name);
          model = await openModel(`fixtures/${name}`);
        });
        afterAll(async () => model.checkpoint.close());

        it('logits of the first two sequences within 1e-3', async () => {
          const logits = await computeLogits(model.source, ref.sequences.slice(0, 2));
          const V = model.spec.vocabSize;
          const got = new Float32Array(2 * ref.T * V);
          logits.forEach((l, b) => got.set(l, b * ref.T * V));
          expect(maxAbsDiff(got, ref.logits)).toBeLessThanOrEqual(1e-3);
        });

        it('mean NLL, target log-probs and observer statistics over all sequences', async () => {
          const stats = sumsqObserver(model.spec, ref.B);
          const result = await evaluateNll(model.source, ref.sequences, { observe: stats.observe, returnTargetLogprobs: true, batchSize: 4 });
          const got = new Float32Array(ref.B * (ref.T - 1));
          result.targetLogprobs!.forEach((l, b) => got.set(l, b * (ref.T - 1)));
          expect(maxAbsDiff(got, ref.targetLogprobs)).toBeLessThanOrEqual(1e-3);
          expect(result.tokens).toBe(ref.B * (ref.T - 1));
          expect(Math.abs(result.meanNll - ref.meanNll)).toBeLessThanOrEqual(1e-4);
          expect(result.perplexity).toBeCloseTo(Math.exp(ref.meanNll), 3);
          expect(maxRelDiff(stats.head, ref.headSumsq)).toBeLessThanOrEqual(1e-4);
          expect(maxRelDiff(stats.gate, ref.gateSumsq)).toBeLessThanOrEqual(1e-4);
        });

        it('greedy continuation identical to the reference', async () => {
          const prompt = ref.sequences[0]!.subarray(0, ref.promptLen);
          const out = await generate(model.source, [prompt], { maxNewTokens: ref.greedyIds.length - ref.promptLen });
          expect(Array.from(out.sequences[0]!)).toEqual(Array.from(ref.greedyIds));
        });
      });
    }
  });
}
