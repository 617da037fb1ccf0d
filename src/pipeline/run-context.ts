/**
 * What every step of an `apex run` works with: the resolved config, the run folder and its
 * record (run.json), the base model, the data (loaded on first use, so a rerun with nothing
 * left to do never reads it), and where progress goes.
 */
import type { ResolvedConfig } from '../run/config-schema.js';
import type { RunData } from './run-data.js';
import type { TrainingLine } from './run-stage-settings.js';
import type { RunState } from './run-state.js';
import type { ResolvedModel } from '../io/resolve-model.js';

export interface RunContext {
  readonly config: ResolvedConfig;
  readonly state: RunState;
  /** The run folder (absolute). */
  readonly run: string;
  /** The resolved local base model folder. */
  readonly modelDir: string;
  /** How the base model was resolved (a LoRA stage's adapter names it). */
  readonly modelSource: ResolvedModel;
  readonly data: () => Promise<RunData>;
  readonly signal?: AbortSignal;
  /** Permanent progress lines. */
  readonly log: (message: string) => void;
  /** Transient status. */
  readonly status: (message: string) => void;
  readonly onWarning: (message: string) => void;
  /** The command line, for the stages' provenance records. */
  readonly argv: readonly string[];
}

/** Evaluation settings shared by every held-out measurement of a run. */
export function evalSettings(ctx: RunContext): { batchSize: number; maxMemoryBytes?: number; signal?: AbortSignal } {
  return {
    batchSize: ctx.config.eval.batch_size,
    ...(ctx.config.max_memory !== null ? { maxMemoryBytes: ctx.config.max_memory } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  };
}
