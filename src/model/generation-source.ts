/**
 * Which weights generation runs on: the whole model in memory when it fits the budget (fast:
 * each step reuses the weights), else the streaming checkpoint source (each step re-reads the
 * layers; slow, but memory stays at one layer plus the key/value cache).
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { expectedTensors } from './architecture.js';
import { estimateForwardMemory } from './memory-estimate.js';
import type { ModelSpec } from './model-spec.js';
import { ResidentWeightSource, disposeModelWeights, loadModelWeights } from './model-weights.js';
import { CheckpointWeightSource, type WeightSource } from './weight-source.js';

export interface GenerationSource {
  readonly source: WeightSource;
  readonly resident: boolean;
  /** Bytes the resident model would take (float32 weights + cache + activations). */
  readonly residentBytes: number;
  dispose(): void;
}

/** float32 weights, the key/value cache of `batch` sequences of `totalLength`, and one prefill's activations. */
export function residentGenerationBytes(spec: ModelSpec, batch: number, promptLength: number, totalLength: number): number {
  let params = 0;
  for (const dims of expectedTensors(spec).values()) params += dims.reduce((p, d) => p * d, 1);
  const cache = 4 * 2 * spec.numLayers * batch * spec.numKvHeads * spec.headDim * totalLength;
  return 4 * params + cache + estimateForwardMemory(spec, batch, promptLength).activationBytes;
}

export async function chooseGenerationSource(checkpoint: Checkpoint, spec: ModelSpec, budget: number, batch: number, promptLength: number, totalLength: number): Promise<GenerationSource> {
  const residentBytes = residentGenerationBytes(spec, batch, promptLength, totalLength);
  if (residentBytes > budget) {
    return { source: new CheckpointWeightSource(checkpoint, spec), resident: false, residentBytes, dispose: () => {} };
  }
  const { model } = await loadModelWeights(checkpoint);
  return { source: new ResidentWeightSource(model), resident: true, residentBytes, dispose: () => disposeModelWeights(model) };
}
