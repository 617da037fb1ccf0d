// A trainer checkpoint read whole into memory, for tests that compare its contents: apex itself
// reads a checkpoint's tensors one at a time (readTrainStateTensors) as it restores them.
import { loadTrainState, readTrainStateTensors, type TrainStateScalars } from '../../src/train/train-state.js';

export interface WholeTrainState {
  readonly path: string;
  readonly scalars: TrainStateScalars;
  readonly optimizer: { readonly step: number; readonly firstMoments: Map<string, Float32Array>; readonly secondMoments: Map<string, Float32Array> };
  readonly trainable: Map<string, { readonly shape: number[]; readonly values: Float32Array }>;
}

export async function readWholeTrainState(path: string): Promise<WholeTrainState> {
  const state = await loadTrainState(path);
  const trainable = new Map<string, { shape: number[]; values: Float32Array }>();
  const firstMoments = new Map<string, Float32Array>();
  const secondMoments = new Map<string, Float32Array>();
  await readTrainStateTensors(state, (t) => {
    trainable.set(t.name, { shape: [...t.shape], values: t.values });
    firstMoments.set(t.name, t.firstMoment);
    secondMoments.set(t.name, t.secondMoment);
  });
  return { path, scalars: state.scalars, optimizer: { step: state.optimizerStep, firstMoments, secondMoments }, trainable };
}
