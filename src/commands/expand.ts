/**
 * `apex expand`: fuse a stage's APEX operators (and trained tensors) into a new, complete
 * Hugging Face checkpoint. The work is in src/pipeline/expand.ts.
 */
import { Args, Flags } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { formatBytes } from '../io/byte-size.js';
import { describeWeightsToDownload } from '../io/hub-headers.js';
import { OUT_DTYPES, type OutDtype } from '../pipeline/expand-plan.js';
import { runExpand, type ExpandResult } from '../pipeline/expand.js';

export default class Expand extends ApexCommand<ExpandResult> {
  static override description = 'Fuse APEX operators (and directly trained tensors) into a new, complete Hugging Face checkpoint.';
  static override examples = [
    '<%= config.bin %> expand ./base-model --operators run/stages/1/operators.safetensors -o ./expanded',
    '<%= config.bin %> expand --run ./run --stage 1',
    '<%= config.bin %> expand --run ./run --stage 2 --dry-run',
  ];

  static override args = {
    model: Args.string({ description: 'Input model: a local folder or a Hub id org/name[@revision].', required: false }),
  };

  static override flags = {
    operators: Flags.string({ description: 'operators.safetensors to fuse.' }),
    updates: Flags.string({ description: 'trained.safetensors: F32 tensors that replace the model\'s before fusion.' }),
    output: Flags.string({ char: 'o', description: 'Output folder (must not exist unless --force). With --run: default <run>/stages/<n>/model/; another folder writes the same model there (e.g. an export with --out-dtype) and leaves the run as it is.' }),
    run: Flags.string({ description: 'Run folder: take the model, operators and trained tensors from it, and the output unless -o (with --stage).' }),
    stage: Flags.integer({ description: 'Stage of the run to fuse (with --run).', min: 1 }),
    'out-dtype': Flags.string({ description: 'Store every float tensor in this dtype (default: keep each tensor\'s).', options: [...OUT_DTYPES] }),
    'max-shard-size': Flags.string({ description: 'Re-shard the output with this shard size limit, e.g. 5GB (default: keep the input\'s layout).' }),
    'max-memory': Flags.string({ description: 'Refuse to start when the memory estimate exceeds this, e.g. 8GiB.' }),
    force: Flags.boolean({ description: 'Replace an existing output folder (atomically).', default: false }),
    'dry-run': Flags.boolean({ description: 'Print which tensors would change and the memory estimate; write nothing (an existing output without --force is refused, exit 2, as by the real expand). It does not hash the input, so with --run a base model changed since training is found only by the fusion itself. Of a Hub model not in the cache only the small files are downloaded and the weight files\' safetensors headers read over HTTP; the plan says how much the real expand would download.', default: false }),
  };

  protected async execute(): Promise<ExpandResult> {
    const { args, flags } = await this.parse(Expand);
    const result = await runExpand({
      ...(args.model !== undefined ? { model: args.model } : {}),
      ...(flags.operators !== undefined ? { operators: flags.operators } : {}),
      ...(flags.updates !== undefined ? { updates: flags.updates } : {}),
      ...(flags.output !== undefined ? { output: flags.output } : {}),
      ...(flags.run !== undefined ? { run: flags.run } : {}),
      ...(flags.stage !== undefined ? { stage: flags.stage } : {}),
      ...(flags['out-dtype'] !== undefined ? { outDtype: flags['out-dtype'] as OutDtype } : {}),
      ...(flags['max-shard-size'] !== undefined ? { maxShardSize: flags['max-shard-size'] } : {}),
      ...(flags['max-memory'] !== undefined ? { maxMemory: flags['max-memory'] } : {}),
      force: flags.force,
      dryRun: flags['dry-run'],
      argv: this.argv,
      progress: (m) => this.progress.update(m),
      signal: this.abort.signal,
    });
    this.progress.stop();
    for (const w of result.warnings) this.note(w);
    this.report(result);
    return result;
  }

  private report(r: ExpandResult): void {
    const m = r.memory;
    if (r.dryRun) {
      this.say(`dry run: ${r.model.dir} → ${r.output} (nothing written)`);
      if (r.model.download) this.say(describeWeightsToDownload(r.model.download));
      for (const l of r.layers) {
        const units = [
          l.heads ? `heads P=[${l.heads.P.join(',')}] N=[${l.heads.N.join(',')}]` : undefined,
          l.channels ? `channels |P|=|N|=${l.channels.P.length}` : undefined,
        ].filter(Boolean).join('; ');
        this.say(`layer ${l.layer}${units ? ` (${units})` : ''}:`);
        for (const c of l.changed) this.say(`  ${c.name}  ${c.reasons.join(', ')}`);
        if (l.changed.length === 0) this.say('  no change (identity operators)');
      }
      for (const g of r.globals) this.say(`${g.name}  ${g.reasons.join(', ')}`);
    } else {
      this.say(`wrote ${r.output}: ${r.shards.length} shard(s), ${formatBytes(r.shards.reduce((s, f) => s + f.bytes, 0))}`);
    }
    this.say(`tensors: ${r.tensors.changed} changed, ${r.tensors.copied} copied byte for byte`);
    this.say(`memory: estimate ${formatBytes(m.totalBytes)} (largest computed tensor ${m.largestTensor ?? 'none'} ${formatBytes(m.tensorBytes)})${r.dryRun ? '' : `, peak RSS ${formatBytes(m.peakRssBytes)}`}`);
  }
}
