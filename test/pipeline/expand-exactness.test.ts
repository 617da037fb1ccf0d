// The fused checkpoint computes what the operator-augmented model computes: logits of the
// checkpoint `apex expand` writes versus the operator hooks (src/ops/operator-hooks.ts, which
// transform activations on the output side and build the input-side weight with Mᵀ, never
// calling fusion.ts) on the unfused checkpoint. MHA + untied (llama-mha-f32), GQA + tied (stories260K).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/model/backend.js';
import { disposeOperatorVariables, operatorHooks, operatorVariables, type TrainableLayerOperators } from '../../src/ops/operator-hooks.js';
import { runExpand } from '../../src/pipeline/expand.js';
import { Rng } from '../../src/util/rng.js';
import { tempDir } from '../io/helpers.js';
import { checkpointLogits, maxAbs, maxAbsDiff } from '../model/helpers.js';
import { copyFixture, fixtureSpec, freshOperators, perturbOperators, writeOperators, type FixtureName } from './expand-fixtures.js';

const BOTH = { heads: true, channels: true };
const HEADS = { heads: true, channels: false };
const CHANNELS = { heads: false, channels: true };
const NEITHER = { heads: false, channels: false };

const CASES: readonly { fixture: FixtureName; layers: (typeof BOTH)[] }[] = [
  { fixture: 'llama-mha-f32', layers: [BOTH, HEADS, NEITHER, BOTH] },
  { fixture: 'stories260K', layers: [BOTH, CHANNELS, NEITHER, BOTH, HEADS] },
];

describe('fused checkpoint = operator-augmented forward (float32, wasm)', () => {
  beforeAll(async () => {
    await selectBackend('wasm');
  });

  for (const { fixture, layers } of CASES) {
    describe(fixture, () => {
      const vars: TrainableLayerOperators[] = [];
      afterAll(() => vars.forEach(disposeOperatorVariables));

      it('logits agree within 1e-4 of the largest logit, and differ from the unfused model', async () => {
        const dir = await tempDir('apex-exact-');
        const spec = await fixtureSpec(fixture);
        const ops = perturbOperators(freshOperators(spec, 21, layers), 22);
        expect(ops.map((o) => o.layer)).toEqual(layers.flatMap((l, i) => (l.heads || l.channels ? [i] : [])));
        const input = join(dir, 'in');
        await copyFixture(fixture, input, 'F32');
        await writeOperators(join(dir, 'ops.safetensors'), ops, spec);
        const out = join(dir, 'out');
        await runExpand({ model: input, operators: join(dir, 'ops.safetensors'), output: out });

        const rng = new Rng(5);
        const sequences = [0, 1].map(() => Int32Array.from({ length: 24 }, () => Math.floor(rng.next() * spec.vocabSize)));
        for (const o of ops) vars.push(operatorVariables(o));
        const hooksOf = new Map(vars.map((v) => [v.layer, operatorHooks(v, spec)]));
        const augmented = await checkpointLogits(input, sequences, (l) => hooksOf.get(l));
        const fused = await checkpointLogits(out, sequences);
        const base = await checkpointLogits(input, sequences);

        const scale = maxAbs(augmented);
        expect(maxAbsDiff(fused, augmented)).toBeLessThanOrEqual(1e-4 * scale);
        expect(maxAbsDiff(base, augmented)).toBeGreaterThan(1e-2 * scale);
      });
    });
  }
});
