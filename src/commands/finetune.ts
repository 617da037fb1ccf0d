/**
 * `apex finetune <model> --stage n -o <run>`: one APEX training stage (or a vanilla / LoRA
 * baseline on the same trainer), written to `<run>/stages/<n>/` and fused into
 * `<run>/stages/<n>/model/`. The work is in train/stage.ts; flags in train/stage-flags.ts.
 */
import { Args } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { resolveModel } from '../io/resolve-model.js';
import { describeWeightsToDownload, weightsToDownload, type WeightsToDownload } from '../io/hub-headers.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { resolveStageSettings } from '../train/stage-options.js';
import { finetuneFlags, loadStageData, stageSettingsFromFlags } from '../train/stage-flags.js';
import { runStage, type StagePlan, type StageResult } from '../train/stage.js';
import { formatBytes } from '../io/byte-size.js';
import { memoryParts } from '../train/stage-memory.js';
import { describeMemoryEstimate } from '../pipeline/analysis-memory.js';

export default class Finetune extends ApexCommand<StageResult> {
  static override description = 'Train one APEX stage (or a vanilla / LoRA baseline) on a model and fuse it into <run>/stages/<n>/model/. The budget is --steps or --tokens (one is required). For a run of several stages pass --total-stages N from stage 1 on: the learning-rate plan spans all N stages (stage 2 … N then train with --stage n into the same -o folder). A LoRA stage also writes its factors as a PEFT adapter, <run>/stages/<n>/adapter/ (PeftModel.from_pretrained on the stage\'s input model).';
  static override examples = [
    '<%= config.bin %> finetune ./my-model --data notes/ --steps 500 --total-stages 2 -o runs/a',
    '<%= config.bin %> finetune ./my-model --data notes/ --steps 500 --total-stages 2 --stage 2 -o runs/a',
    '<%= config.bin %> finetune ./stories260K --input-ids ids.safetensors --setting operators --steps 50 --lr 1e-3 -o runs/b',
    '<%= config.bin %> finetune ./my-model --data notes/ --method lora --match-params runs/a --steps 500 -o runs/lora',
  ];
  static override args = { model: Args.string({ description: 'Base model folder or Hugging Face repo id (org/name[@revision]).', required: true }) };
  static override flags = finetuneFlags;

  protected async execute(): Promise<StageResult & { readonly download?: WeightsToDownload | null }> {
    const { args, flags } = await this.parse(Finetune);
    const settings = stageSettingsFromFlags(args.model, flags, this.argv);
    resolveStageSettings(settings);
    // A dry run reads the headers of Hub weight files not in the cache instead of downloading them.
    const resolved = await resolveModel(args.model, { signal: this.abort.signal, progress: (m) => this.progress.update(m), weights: flags['dry-run'] ? 'headers' : 'download' });
    const tokenizer = flags['input-ids'] ? undefined : await loadTokenizer(resolved.dir);
    this.progress.update('loading data');
    const { train, eval: held } = await loadStageData(flags, tokenizer, (m) => this.note(m), this.abort.signal, (m) => this.progress.update(m));
    const result = await runStage({
      ...settings,
      // base_model is recorded so that `apex expand --run` can resolve it again from anywhere: a
      // local folder by its absolute path (`~` expanded, as the resolver reads it), a Hub id as given.
      model: resolved.source === 'local' ? resolved.dir : args.model,
      modelDir: resolved.dir,
      modelSource: resolved,
      train,
      eval: held,
      signal: this.abort.signal,
      progress: (m) => this.progress.update(m),
      onWarning: (m) => this.note(m),
    });
    this.progress.stop();
    if (result.plan) {
      const planned = { ...result, plan: { ...result.plan, download: weightsToDownload(resolved.remoteWeights) } };
      this.sayPlan(planned, planned.plan);
      return planned;
    }
    if (flags['dry-run']) {
      // --resume on a complete stage: the real command would reuse it (fusing it if its model is missing).
      this.say(`dry run: stage ${result.stage} (${result.dir}) is already complete; --resume would reuse it${settings.expand !== false ? `, fusing it into ${result.dir}/model/ if that is missing` : ''}. Nothing was written`);
      // The command resolves (downloads) the model before it finds the stage complete.
      const download = weightsToDownload(resolved.remoteWeights);
      if (download) this.say(describeWeightsToDownload(download));
      return { ...result, download };
    }
    const t = result.trainable;
    this.say(`stage ${result.stage} (${result.method}${result.setting ? ` ${result.setting}` : ''}${result.lora ? ` rank ${result.lora.rank}` : ''}): ${result.status === 'complete' ? 'already complete' : `${result.steps - result.startStep} step${result.steps - result.startStep === 1 ? '' : 's'} trained${result.startStep > 0 ? ` (resumed at step ${result.startStep})` : ''}`}`);
    this.say(`trainable parameters: ${t.trainable.toLocaleString('en-US')} of ${t.modelParams.toLocaleString('en-US')} (${(100 * t.fraction).toFixed(2)}%)`);
    if (result.finalLoss !== null) this.say(`final training loss ${result.finalLoss.toFixed(4)}${result.eval ? `, held-out loss ${result.eval.loss.toFixed(4)} (perplexity ${result.eval.ppl.toFixed(3)})` : ''}`);
    this.say(`written to ${result.dir}${result.modelDir ? `; fused model in ${result.modelDir}` : ''}`);
    return result;
  }

  private sayPlan(result: StageResult, plan: StagePlan): void {
    const t = result.trainable;
    const m = plan.memory;
    this.say(`dry run of stage ${result.stage} (${result.method}${result.setting ? ` ${result.setting}` : ''}${result.lora ? ` rank ${result.lora.rank}, alpha ${result.lora.alpha}` : ''}): nothing was trained or written`);
    if (plan.analysisSequences !== null) this.say(`analysis first, on ${plan.analysisSequences} of the training sequences (--calibration-samples)${plan.analysisMemory ? `; its ${describeMemoryEstimate(plan.analysisMemory)}` : ''}`);
    this.say(`steps: ${result.steps}${result.startStep > 0 ? ` (resuming at step ${result.startStep})` : ''}, each of ${plan.tokensPerStep.toLocaleString('en-US')} tokens (batch ${plan.batchSize} × accumulation ${plan.gradAccum} × ${plan.seqLen}), ${result.tokens.toLocaleString('en-US')} tokens in all; ${plan.trainSequences.toLocaleString('en-US')} training sequences; peak learning rate ${plan.peakLr}`);
    this.say(plan.eval ? `held-out evaluation: ${plan.eval.sequences.toLocaleString('en-US')} sequences of ${plan.eval.seqLen} tokens in batches of ${plan.eval.batchSize}` : 'held-out evaluation: none');
    this.say(`trainable parameters: ${t.trainable.toLocaleString('en-US')} of ${t.modelParams.toLocaleString('en-US')} (${(100 * t.fraction).toFixed(2)}%)`);
    this.say(`memory estimate: ${formatBytes(m.totalBytes)} (${memoryParts(m)})`);
    this.say(`backend: ${plan.backend}`);
    if (plan.download) this.say(describeWeightsToDownload(plan.download));
  }
}
