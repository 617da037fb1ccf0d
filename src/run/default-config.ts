/**
 * The embedded default of `apex run` with no config file: a complete offline demonstration on
 * the bundled fixture model and the bundled out-of-domain corpus, sized to finish in a few
 * minutes on a 2-core CPU. The budget numbers live here and nowhere else.
 */
import { fileURLToPath } from 'node:url';

/** The bundled model, relative to the package root. */
export const EMBEDDED_MODEL = 'fixtures/llama-mha-f32';

/** The bundled corpus (fixtures/corpus/, loaded by `builtinCorpus` in src/train/data.ts). */
export const EMBEDDED_TRAIN_DATA = 'builtin:out-of-domain';

/**
 * Training budget of the demonstration: 2 stages × 36 steps × 8 × 128 tokens for APEX and the
 * same again for the vanilla baseline. Sized for about 4 minutes on one core of a 2-core CPU
 * with the wasm backend (measured: 223 s of CPU time for the whole run, of which ~190 s are
 * the four stages at ~780 training tokens/s and ~35 s data, analysis, fusion and five
 * evaluations). No evaluation during training (each would cost ~4 s); held-out perplexity is
 * measured on every fused stage model instead.
 */
export const EMBEDDED_BUDGET = {
  stages: 2,
  stepsPerStage: 36,
  seqLen: 128,
  batchSize: 8,
  lr: 1e-3,
  evalEvery: null,
  evalSamples: 64,
  checkpointEvery: 12,
  calibrationSamples: 32,
} as const;

/**
 * Absolute path of the bundled model. This module sits two folders below the package root
 * in src/ (tsx, vitest) and in dist/ alike, so the same relative URL holds in both.
 */
export const EMBEDDED_MODEL_PATH = fileURLToPath(new URL(`../../${EMBEDDED_MODEL}`, import.meta.url));

/**
 * The embedded default as a config layer (same shape as a config file). `modelPath` is how
 * the model is written: the absolute bundled path for running, the relative one for the docs.
 */
export function embeddedDefaultConfig(modelPath = EMBEDDED_MODEL_PATH): Record<string, unknown> {
  const b = EMBEDDED_BUDGET;
  return {
    model: modelPath,
    data: {
      train: EMBEDDED_TRAIN_DATA,
      seq_len: b.seqLen,
      calibration_samples: b.calibrationSamples,
      eval_samples: b.evalSamples,
    },
    method: 'apex',
    setting: 'full',
    stages: { count: b.stages, steps: b.stepsPerStage },
    optimizer: { lr: b.lr, batch_size: b.batchSize },
    eval: { every: b.evalEvery },
    checkpoint: { every: b.checkpointEvery },
    baseline: { vanilla: true },
  };
}
