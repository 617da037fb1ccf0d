/**
 * What every computing command does first: resolve the model argument (folder or Hub repo),
 * open its checkpoint, check config and tensors against the architecture table, and activate a
 * TensorFlow.js backend. Returns everything a forward pass needs plus what to record.
 */
import { Checkpoint } from '../io/checkpoint.js';
import { resolveModel, type ResolvedModel } from '../io/resolve-model.js';
import { selectBackend, type BackendName, type BackendRequest } from './backend.js';
import type { ModelSpec } from './model-spec.js';
import { CheckpointWeightSource, describeCheckpoint } from './weight-source.js';

export interface OpenedModel {
  readonly resolved: ResolvedModel;
  readonly checkpoint: Checkpoint;
  readonly spec: ModelSpec;
  readonly source: CheckpointWeightSource;
  readonly backend: { name: BackendName; detail: string };
  /** Harmless oddities of the checkpoint (ignored extra tensors). */
  readonly warnings: string[];
}

export async function openModelForCompute(arg: string, options: { backend?: BackendRequest; signal?: AbortSignal; progress?: (message: string) => void } = {}): Promise<OpenedModel> {
  const resolved = await resolveModel(arg, { ...(options.signal ? { signal: options.signal } : {}), ...(options.progress ? { progress: options.progress } : {}) });
  const checkpoint = await Checkpoint.open(resolved.dir);
  try {
    const { spec, warnings } = describeCheckpoint(checkpoint);
    const backend = await selectBackend(options.backend ?? 'auto');
    return { resolved, checkpoint, spec, source: new CheckpointWeightSource(checkpoint, spec), backend, warnings };
  } catch (e) {
    await checkpoint.close();
    throw e;
  }
}
