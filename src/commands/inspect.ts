/**
 * `apex inspect <model>`: architecture and config summary, tensor and parameter counts, dtype
 * histogram, shards and validation of a checkpoint, from headers only. The work is in
 * io/inspect.ts. A failed validation exits 3 (VALIDATION_FAILED) after the full report, which
 * `--json` keeps as `data`; an architecture apex does not compute with is reported, not failed.
 */
import { Args } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { InputError } from '../errors.js';
import { formatInspection, inspectCheckpoint, type InspectResult } from '../io/inspect.js';
import { resolveModel } from '../io/resolve-model.js';

export default class Inspect extends ApexCommand<InspectResult> {
  static override description = 'Summarise a checkpoint: architecture, config, tensors, parameters, dtypes, shards and validation (reads headers only); exits 3 (VALIDATION_FAILED) after the report when a check fails. An architecture apex cannot compute with is summarised with supported: false and unsupportedReason, exit 0 (check supported in CI).';
  static override examples = [
    '<%= config.bin %> inspect ./my-model',
    '<%= config.bin %> inspect TinyLlama/TinyLlama-1.1B-Chat-v1.0 --json',
  ];
  static override args = { model: Args.string({ description: 'Model folder or Hugging Face repo id (org/name[@revision]).', required: true }) };

  protected async execute(): Promise<InspectResult> {
    const { args } = await this.parse(Inspect);
    const resolved = await resolveModel(args.model, { progress: (m) => this.progress.update(m), signal: this.abort.signal });
    const result = await inspectCheckpoint(resolved.dir);
    for (const w of result.validation.warnings) this.note(w);
    for (const line of formatInspection(result)) this.say(line);
    const failed = result.validation.checks.filter((c) => !c.ok);
    if (failed.length > 0) {
      this.outcomeError = new InputError(`${resolved.dir}: validation failed: ${failed.map((c) => `${c.check}: ${c.detail}`).join('; ')}`, 'VALIDATION_FAILED');
    }
    return result;
  }
}
