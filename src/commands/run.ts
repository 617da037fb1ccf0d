/**
 * `apex run [config.yaml] [key=value ...]`: the whole multi-stage pipeline from one config
 * (analysis, every stage, the vanilla baseline, evaluations, summary). Without a config file it
 * runs the embedded offline demonstration. The work is in pipeline/run.ts; flags that name a
 * config key (-o, --backend) are overrides of that key, so they count in the config hash the
 * same way.
 */
import { existsSync } from 'node:fs';
import { Flags } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { ApexError, InterruptedError, UsageError } from '../errors.js';
import { runPipeline } from '../pipeline/run.js';
import { planRun, type RunPlan } from '../pipeline/run-plan.js';
import { formatBytes } from '../io/byte-size.js';
import { describeWeightsToDownload } from '../io/hub-headers.js';
import { memoryParts } from '../train/stage-memory.js';
import { describeMemoryEstimate } from '../pipeline/analysis-memory.js';
import type { RunSummary } from '../pipeline/run-summary.js';
import { renderPerplexityTable } from '../pipeline/run-table.js';
import { configHash, formatResolvedConfig } from '../run/config-format.js';
import { BACKENDS, type ResolvedConfig } from '../run/config-schema.js';
import { resolveConfig } from '../run/config.js';

/** `--print-config --json` prints the resolved config instead of a summary; `--dry-run` the plan. */
type RunCommandResult = RunSummary | RunPlan | { configHash: string; config: ResolvedConfig };

/** How an interrupted run continues (the trainer says the same: run-line.ts resumeHint). */
const RESUME_HINT = 'run the same apex run command again to continue';

/** `key=value` with a key path (`stages.count=3`, `data.train=[a,b]`), as opposed to a file name. */
const OVERRIDE = /^[A-Za-z_][\w.[\]]*=/;

/** A key=value override; a mis-spaced one (`stages.count =3`, `=3`) too, so it is named as such rather than sought as a config file. */
function isOverride(arg: string): boolean {
  return OVERRIDE.test(arg) || (arg.includes('=') && !existsSync(arg));
}

export default class Run extends ApexCommand<RunCommandResult> {
  static override description =
    'Run the whole APEX pipeline from one config: analysis, every training stage with its fused checkpoint, a vanilla baseline at the same token budget, held-out perplexity before and after each stage, and a summary (summary.json, index.html). Without a config file: a complete offline demonstration on a bundled model and corpus. A rerun of the same config resumes.';
  static override examples = [
    '<%= config.bin %> run',
    '<%= config.bin %> run config.yaml',
    '<%= config.bin %> run config.yaml stages.count=3 optimizer.lr=1e-4 -o runs/three-stages',
    '<%= config.bin %> run config.yaml --print-config',
    '<%= config.bin %> run config.yaml --dry-run',
    '<%= config.bin %> run config.yaml --json > summary.json',
  ];
  static override strict = false;
  static override usage = 'run [CONFIG.yaml] [KEY=VALUE...] [-o DIR] [--print-config] [--dry-run] [--force] [--backend NAME] [--json] [--quiet]';
  static override flags = {
    output: Flags.string({ char: 'o', description: 'Run folder (same as output=DIR; default ./apex-run).' }),
    'print-config': Flags.boolean({ description: 'Print the resolved config as YAML and exit without doing any work.', default: false }),
    'dry-run': Flags.boolean({ description: 'Check what a run checks before it trains (config, model, data, backend, the run folder and, resuming, its recorded inputs and checkpoints), tokenize the data, size the evaluation of the base model and the analysis within max_memory, and plan the next stage of the run and of the baseline (steps, tokens, trainable parameters, the training memory estimate); write nothing in the run folder. Exits with the code the run would (5 where a stage cannot fit max_memory or the wasm heap). Of a Hub model not in the cache only the config and tokenizer files are downloaded; its weight files are not: their safetensors headers are read over HTTP, and the plan says how much the run would download.', default: false, exclusive: ['print-config'] }),
    force: Flags.boolean({ description: 'Discard an existing run folder (another config\'s run, or anything else) and start over.', default: false }),
    backend: Flags.string({ description: 'TensorFlow.js backend (same as backend=NAME).', options: [...BACKENDS] }),
  };

  protected async execute(): Promise<RunCommandResult> {
    const { argv, flags } = await this.parse(Run);
    const positional = argv as string[];
    const files = positional.filter((a) => !isOverride(a));
    if (files.length > 1) throw new UsageError(`one config file at most, got ${files.length}: ${files.join(', ')} (overrides are written key=value)`);
    const overrides = [
      ...positional.filter((a) => isOverride(a)),
      ...(flags.output !== undefined ? [`output=${JSON.stringify(flags.output)}`] : []),
      ...(flags.backend !== undefined ? [`backend=${flags.backend}`] : []),
    ];
    const resolved = await resolveConfig({ ...(files[0] !== undefined ? { file: files[0] } : {}), overrides, cwd: process.cwd() });
    if (flags['print-config']) {
      if (!this.jsonEnabled()) process.stdout.write(formatResolvedConfig(resolved));
      return { configHash: configHash(resolved.config), config: resolved.config };
    }
    if (flags['dry-run']) {
      const plan = await planRun({ resolved, force: flags.force, signal: this.abort.signal, status: (m) => this.progress.update(m), onWarning: (m) => this.note(m) });
      this.progress.stop();
      this.sayPlan(plan);
      return plan;
    }
    const summary = await runPipeline({
      resolved,
      force: flags.force,
      argv: this.argv,
      signal: this.abort.signal,
      log: (m) => this.progress.info(m),
      status: (m) => this.progress.update(m),
      onWarning: (m) => this.note(m),
    }).catch((e: unknown) => {
      throw this.withResumeHint(e);
    });
    this.progress.stop();
    this.say(renderPerplexityTable(summary, process.stdout.columns || undefined));
    this.say(`run folder: ${summary.run} (summary.json, index.html)`);
    return summary;
  }

  /**
   * An interruption outside a training stage (the analysis, an evaluation, fusing, writing the
   * summary) says how the run continues, as the trainer's own message does: `apex run` has no
   * --resume, and the bare "interrupted by SIGINT" left a user guessing whether the work was lost.
   */
  private withResumeHint(e: unknown): unknown {
    const interrupted = e instanceof ApexError ? e.code === 'INTERRUPTED' : this.abort.signal.aborted;
    if (!interrupted) return e;
    const message = e instanceof ApexError ? e.message : String((this.abort.signal.reason as Error | undefined)?.message ?? 'interrupted');
    if (message.includes(RESUME_HINT)) return e;
    return new InterruptedError(`${message}; ${RESUME_HINT}`);
  }

  private sayPlan(plan: RunPlan): void {
    const folder = plan.start === 'new' ? 'a new run' : plan.start === 'resumed' ? "this config's run, which would resume" : 'discarded and started over (--force)';
    const n = (count: number, word: string) => `${count.toLocaleString('en-US')} ${word}${count === 1 ? '' : 's'}`;
    this.say('dry run: nothing was trained or written');
    this.say(`run folder: ${plan.run}: ${folder}`);
    this.say(`model: ${plan.model.dir} (${n(plan.model.layers, 'layer')}, ${plan.model.parameters.toLocaleString('en-US')} parameters); backend ${plan.backend}`);
    if (plan.model.download) this.say(describeWeightsToDownload(plan.model.download));
    this.say(`data: ${n(plan.data.train, 'training sequence')} of ${plan.data.seqLen} tokens, ${plan.data.eval.toLocaleString('en-US')} held-out${plan.data.calibration !== null ? `, ${plan.data.calibration.toLocaleString('en-US')} for the analysis` : ''}`);
    if (plan.analysis) this.say(`analysis of ${n(plan.analysis.sequences, 'calibration sequence')} first: ${describeMemoryEstimate(plan.analysis.memory)}`);
    for (const line of plan.lines) {
      const s = line.stage;
      const p = s.plan!;
      const m = p.memory;
      const t = s.trainable;
      const done = line.complete.length === line.stages ? ', all complete' : line.complete.length > 0 ? `, ${line.complete.length} complete` : '';
      this.say(`${line.name}${line.setting ? ` (${line.setting})` : ''}${s.lora ? ` (rank ${s.lora.rank}, alpha ${s.lora.alpha})` : ''}: ${n(line.stages, 'stage')} of ${n(s.steps, 'step')} × ${p.tokensPerStep.toLocaleString('en-US')} tokens (batch ${p.batchSize} × accumulation ${p.gradAccum} × ${p.seqLen}), ${line.tokens.toLocaleString('en-US')} tokens in all${done}; ${line.toTrain.toLocaleString('en-US')} tokens to train`);
      if (line.fuse.length > 0) this.say(`  stage${line.fuse.length === 1 ? '' : 's'} ${line.fuse.join(', ')}: trained, to be fused again`);
      if (line.next !== null) this.say(`  next: stage ${line.next}${line.resumeStep > 0 ? `, resuming at step ${line.resumeStep}` : ''}`);
      this.say(`  trainable parameters: ${t.trainable.toLocaleString('en-US')} of ${t.modelParams.toLocaleString('en-US')} (${(100 * t.fraction).toFixed(2)}%)`);
      this.say(`  memory estimate per stage: ${formatBytes(m.totalBytes)} (${memoryParts(m)})`);
    }
  }
}
