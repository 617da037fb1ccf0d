/**
 * One training stage of a run (APEX-METHOD §5, §7; issue 6), from its inputs to its folder:
 *
 *   1. settings checked (UsageError before anything is read or written);
 *   2. the input model: stage 1 the base model, stage n > 1 `stages/<n-1>/model/`;
 *   3. LoRA's rank (or the one matching an APEX run), the budget in steps, the learning-rate
 *      plan over all stages, and the memory estimate (over --max-memory: refused here);
 *   4. APEX: the stage's scores (stage 1 runs the analysis when `analysis/stats.safetensors`
 *      is missing), P/N/E per layer;
 *   5. under the run folder's lock: the model loaded with its trainables (fresh seeded
 *      operators or adapters), the score recorder, the training loop (resuming from the last
 *      checkpoint with `resume`), then the stage's files and finally `apex_run.json`, whose
 *      presence marks the stage complete;
 *   6. `apex expand --run <run> --stage n` fuses it into `stages/<n>/model/` (again on resume,
 *      when the model there is not complete and verified).
 * A failure removes a run folder this call created when it holds nothing to resume from.
 */
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError, InternalError, UsageError } from '../errors.js';
import { loraParamCount, maxLoraRank } from './lora.js';
import { Checkpoint } from '../io/checkpoint.js';
import { acquireOutputLock, refuseLockNameTooLong } from '../io/output-lock.js';
import { refuseInputsInsideOutput, type NamedInput } from '../io/output-inputs.js';
import { selectBackend, type BackendRequest } from '../model/backend.js';
import { checkTokens, contextWarning } from '../model/streaming-forward.js';
import { describeCheckpoint } from '../model/weight-source.js';
import type { LayerSelection } from '../ops/selection.js';
import { apexVersion, modelRecord, sha256OfFile, type ModelRecord } from '../pipeline/analysis-provenance.js';
import { modelFingerprint, runAnalysis, unpadded } from '../pipeline/analyze.js';
import { checkMemoryLimit, describeMemoryEstimate, planAnalysisMemory, type AnalysisMemoryEstimate } from '../pipeline/analysis-memory.js';
import { readJson, runBaseModel, stageDir } from '../pipeline/expand-paths.js';
import { ANALYSIS_FILES, type AnalysisJson } from '../pipeline/analysis-json.js';
import { runExpand } from '../pipeline/expand.js';
import { removeUnresumableRunFolderLocked } from '../pipeline/failed-run-folder.js';
import { fusedModelState } from '../pipeline/fused-model-state.js';
import { peakRssBytes, PROVENANCE_FILE, ProvenanceRecorder, writeProvenance, type FileRecord, type FileSetRecord } from '../pipeline/provenance.js';
import { dataSourceName, sampleSequences, type SequenceSet } from './data.js';
import { readMetrics, type MetricsLine } from './metrics-log.js';
import { TrainingScoreRecorder } from './score-recorder.js';
import { checkTrainingMemory, CONFIG_MEMORY_ADVICE, estimateTrainingMemory, type TrainingMemoryEstimate } from './stage-memory.js';
import { refuseOverWasmHeap, WASM_HEAP_USABLE_BYTES } from '../model/wasm-heap-limit.js';
import { checkWebgpuBinding } from '../model/webgpu-binding-limit.js';
import { maxStorageBindingBytes, onWebgpu } from '../ops/webgpu-programs.js';
import { resolveStageSettings, stageSteps, type ResolvedStageSettings, type StageSettings } from './stage-options.js';
import { analysisMismatch } from './stage-analysis-match.js';
import { collectStageTensors, HELDOUT_FILE, writeStageFiles } from './stage-outputs.js';
import { checkStageOutputs, completedStageChanges, matchedLoraRank, runLrPlan, stageSeeds, type StageDetails } from './stage-records.js';
import { selectStageUnits, sizingSelections, stageCountingK, stageRecorderShape, stageScoresPath } from './stage-selection.js';
import { adapterBase } from './peft-adapter.js';
import type { ResolvedModel } from '../io/resolve-model.js';
import type { WeightsToDownload } from '../io/hub-headers.js';
import { buildStageTrainables, optimizerEntryCount, planDirectTrainables, summarizePlan, type TrainablePlan } from './stage-trainables.js';
import { checkTrainStateSpace, latestCheckpoint, loadTrainState } from './train-state.js';
import { folderBytes } from '../io/folder-bytes.js';
import { elementCount, type TrainableSummary, type TrainingSetting } from './trainable-params.js';
import { sequenceSetDigest, train, type StepReport } from './trainer.js';
import { resumeKeyChanges, stageResumeKey } from './stage-resume-key.js';
import { makeOutputFolder, refuseFileInOutputPath } from '../io/atomic-output.js';
import { inProgressName } from '../io/stale-temps.js';
import { MODEL_FILES } from '../io/model-files.js';

/** How a stage's messages name the settings a user gave. */
export interface StageNames {
  readonly seqLen: string;
  readonly tokens: string;
  readonly batchSize: string;
  readonly evalBatchSize: string;
  readonly loraRank: string;
  readonly matchParams: string;
  readonly maxMemory: string;
  readonly calibrationSamples: string;
  readonly gradAccum: string;
  /** How to turn activation recomputation on. */
  readonly recompute: string;
}

const FINETUNE_NAMES: StageNames = { seqLen: '--seq-len', tokens: '--tokens', batchSize: '--batch-size', evalBatchSize: '--eval-batch-size', loraRank: '--lora-rank', matchParams: '--match-params', maxMemory: '--max-memory', calibrationSamples: '--calibration-samples', gradAccum: '--grad-accum', recompute: 'add --recompute-activations' };

/** How `apex run` names them: its config keys. */
export const RUN_CONFIG_NAMES: StageNames = { seqLen: 'data.seq_len', tokens: 'stages.tokens', batchSize: 'optimizer.batch_size', evalBatchSize: 'eval.batch_size', loraRank: 'lora.rank', matchParams: 'lora.match_params', maxMemory: 'max_memory', calibrationSamples: 'data.calibration_samples', gradAccum: 'optimizer.grad_accum', recompute: 'set optimizer.recompute_activations: true' };

/** LoRA rank when neither --lora-rank nor --match-params is given. */
export const DEFAULT_LORA_RANK = 8;
export const METRICS_FILE = 'metrics.jsonl';
export const CHECKPOINTS_DIR = 'checkpoints';

export interface StageOptions extends StageSettings {
  /** Resolved local folder of the base model (stage 1's input). `model` is what base_model records. */
  readonly modelDir: string;
  /**
   * How `model` was resolved (a local folder, or a Hub repo at a commit): a LoRA stage's adapter
   * names that base. Without it, `model` is read as a folder when one is there, else as a Hub id.
   * Its `remoteWeights` (a dry run's Hub model whose weights were not downloaded) make stage 1
   * open a header-only checkpoint.
   */
  readonly modelSource?: Pick<ResolvedModel, 'source' | 'repo' | 'revision' | 'commit' | 'remoteWeights'>;
  readonly train: SequenceSet;
  /** Held-out data for the periodic evaluation. */
  readonly eval?: SequenceSet;
  readonly signal?: AbortSignal;
  readonly progress?: (message: string) => void;
  /** After each step; awaited when it returns a promise. */
  readonly onStep?: (report: StepReport) => unknown;
  readonly onWarning?: (message: string) => void;
  /** See TrainerOptions.prepareTransforms (default on; off only to check it). */
  readonly prepareTransforms?: boolean;
  /** How the caller continues an interrupted stage (see TrainerOptions.resumeHint). */
  readonly resumeHint?: string;
  /**
   * The caller analyses before the stage when stage 1 has no scores (apex run, from its
   * calibration data): a dry run then neither sizes nor reports an analysis of its own.
   */
  readonly analysedByCaller?: boolean;
  /** How messages name the sequence length and the LoRA flags (defaults: finetune's flags; apex run passes its config keys). */
  readonly names?: Partial<StageNames>;
  /**
   * The caller holds the run folder's lock for the whole stage (apex run): the stage does not
   * take it itself, so the folder is never unlocked between the caller's work and the stage's.
   */
  readonly runLockHeld?: boolean;
  /**
   * With dryRun: plan the stage as in an empty run folder (apex run --dry-run --force, whose run
   * would discard the folder before training); what the folder holds now is not looked at.
   */
  readonly planAsEmpty?: boolean;
  /**
   * With dryRun: the plan is wanted for its figures only (apex run --dry-run where this stage is
   * not the one that trains next): checks that concern a stage about to train, such as the disk
   * space for a checkpoint, are left out.
   */
  readonly planFiguresOnly?: boolean;
}

export interface StageResult {
  readonly stage: number;
  /** The stage folder. */
  readonly dir: string;
  readonly method: ResolvedStageSettings['method'];
  readonly setting: ResolvedStageSettings['setting'] | null;
  /** `trained`; `complete` when a resumed stage had already finished; `planned` for a dry run (nothing trained or written). */
  readonly status: 'trained' | 'complete' | 'planned';
  readonly steps: number;
  /** 0, or the checkpoint step a resumed run continued from. */
  readonly startStep: number;
  readonly tokens: number;
  readonly trainable: TrainableSummary;
  readonly lora: { readonly rank: number; readonly alpha: number } | null;
  readonly finalLoss: number | null;
  /** The last held-out evaluation (mean NLL and perplexity). */
  readonly eval: { readonly loss: number; readonly ppl: number } | null;
  readonly tokensPerSecond: number;
  /** Files written into the stage folder (besides checkpoints and metrics). */
  readonly files: string[];
  /** The fused checkpoint, when expanded. */
  readonly modelDir: string | null;
  readonly memoryEstimateBytes: number;
  readonly peakRssBytes: number;
  /** A dry run's plan (status `planned`). */
  readonly plan?: StagePlan;
}

/** What a dry run found the stage would do, before its first step. */
export interface StagePlan {
  readonly batchSize: number;
  readonly gradAccum: number;
  readonly seqLen: number;
  readonly tokensPerStep: number;
  /** The held-out evaluations' batch and sequence length, when the stage evaluates. */
  readonly eval: { readonly batchSize: number; readonly seqLen: number; readonly sequences: number } | null;
  readonly trainSequences: number;
  /** Peak learning rate of this stage's plan. */
  readonly peakLr: number;
  /** Stage 1 of an APEX run without analysis/stats.safetensors analyses first, on this many sequences. */
  readonly analysisSequences: number | null;
  /** That analysis's memory estimate (a dry run refuses what it would refuse). */
  readonly analysisMemory: AnalysisMemoryEstimate | null;
  readonly memory: TrainingMemoryEstimate;
  readonly backend: string;
  /**
   * A Hub model whose weight files the dry run did not download (it read their headers): what
   * the run would download; null when the weights are local or cached. Set by `apex finetune`.
   */
  readonly download?: WeightsToDownload | null;
}

/** What the stage reads: what --force, deleting the stage folder first, must not delete with it. */
function stageInputs(options: StageOptions, settings: ResolvedStageSettings, inputDir: string): NamedInput[] {
  const data = (label: string, set: SequenceSet | undefined) => (set?.source.kind === 'builtin' ? [] : (set?.source.paths ?? []).map((path) => ({ label, path })));
  return [
    { label: 'the model', path: inputDir },
    ...(resolve(options.modelDir) !== inputDir ? [{ label: 'the model argument', path: options.modelDir }] : []),
    ...data('the training data', options.train),
    ...data('the held-out data', options.eval),
    ...(settings.lora?.matchParams !== undefined ? [{ label: '--match-params', path: settings.lora.matchParams }] : []),
  ];
}

/** A dry run of a stage whose run folder would be discarded first: what the folder holds now is not looked at. */
function planAsEmpty(options: StageOptions): boolean {
  return options.dryRun === true && options.planAsEmpty === true;
}

function trainingSetting(s: ResolvedStageSettings): TrainingSetting {
  return s.method === 'apex' ? s.setting! : s.method;
}

/**
 * Trains the stage. A failure removes the run folder when this call created it and it holds
 * nothing to resume from (pipeline/failed-run-folder.ts); a folder that was there before is
 * left as it is.
 */
export async function runStage(options: StageOptions): Promise<StageResult> {
  const run = resolve(options.run);
  const existed = existsSync(run);
  try {
    return await trainStage(options);
  } catch (e) {
    if (!existed && (await removeUnresumableRunFolderLocked(run, 'apex finetune').catch(() => false))) {
      (options.onWarning ?? options.progress)?.(`removed ${run}: this failed run had created it and left nothing to resume from`);
    }
    throw e;
  }
}

/**
 * Everything a stage decides (complete, resume or fresh; analyse or not) and writes happens
 * under the run folder's lock: a second process that prepared at the same time cannot act on
 * what it saw before the first one finished.
 */
async function trainStage(options: StageOptions): Promise<StageResult> {
  const settings = resolveStageSettings(options);
  const run = resolve(settings.run);
  if (existsSync(run) && !statSync(run).isDirectory()) throw new UsageError(`-o ${run} is a file; a run is a folder (give a new or existing run folder)`, 'OUTPUT_NOT_A_FOLDER');
  // A dry run creates no folder: refuse a path through a file here, as creating it would (exit 2).
  await refuseFileInOutputPath(run);
  if (!planAsEmpty(options)) refuseForeignFolder(run);
  // A dry run writes nothing, not even the run folder or its lock.
  if (options.runLockHeld) return trainStageLocked(options, settings);
  // A name the lock file cannot have is refused before any folder is made (a dry run takes no
  // lock, and refuses it as the stage does).
  await refuseLockNameTooLong(run);
  if (settings.dryRun) return trainStageLocked(options, settings);
  await makeOutputFolder(dirname(run));
  const lock = await acquireOutputLock(run, { command: 'apex finetune', onWarning: (m) => (options.onWarning ?? options.progress)?.(m) });
  try {
    return await trainStageLocked(options, settings);
  } finally {
    await lock.release();
  }
}

async function trainStageLocked(options: StageOptions, settings: ResolvedStageSettings): Promise<StageResult> {
  const prov = new ProvenanceRecorder(settings.command, settings.argv);
  const say = options.progress ?? (() => {});
  const warn = (m: string) => (options.onWarning ?? say)(m);
  const names: StageNames = { ...FINETUNE_NAMES, ...options.names };
  const { stage } = settings;
  const run = resolve(settings.run);
  const dir = stageDir(run, stage);
  const checkpointsDir = join(dir, CHECKPOINTS_DIR);
  const inputDir = stage === 1 ? resolve(options.modelDir) : join(stageDir(run, stage - 1), 'model');
  if (stage > 1 && !existsSync(join(inputDir, 'config.json'))) {
    const earlier = existsSync(join(stageDir(run, stage - 1), PROVENANCE_FILE));
    throw new InputError(
      `${inputDir} does not exist: stage ${stage} starts from the fused model of stage ${stage - 1} (${earlier ? `apex expand --run ${run} --stage ${stage - 1}` : `train stage ${stage - 1} first`})`,
      'NOT_FOUND',
    );
  }
  if (stage > 1) {
    // Later stages take their weights from stages/<n-1>/model; the model argument still decides
    // the tokenizer the data was read with, so it must read text as the fused model's own
    // tokenizer files do (a moved or copied folder of the run's model is fine).
    const recorded = await runBaseModel(run);
    if (recorded !== undefined && !sameModelArgument(recorded, settings.model)) {
      const differing = await differingTokenizerFiles(resolve(options.modelDir), inputDir);
      if (differing.length > 0) {
        throw new UsageError(
          `${run} was started from ${recorded}, not ${settings.model}, and their tokenizer files differ (${differing.join(', ')}): stage ${stage} continues that run (its weights come from ${inputDir}); give the run's model`,
          'MODEL_MISMATCH',
        );
      }
    }
  }
  if (!planAsEmpty(options) && existsSync(join(dir, PROVENANCE_FILE))) {
    if (settings.resume) return completedStage(settings.dryRun ? { ...settings, expand: false } : settings, options, dir, say);
    if (!settings.force) {
      // Trained but not fused (the fusion was interrupted, or the model was deleted): --resume
      // finishes it without training again, which "already complete … --force" did not say.
      const fused = settings.expand && !settings.dryRun ? await fusedModelState(run, stage) : undefined;
      if (fused !== undefined && fused.kind !== 'complete') {
        const model = join(dir, 'model');
        throw new UsageError(
          `stage ${stage} of ${run} is trained (${join(dir, PROVENANCE_FILE)}) but not fused: ${fused.kind === 'absent' ? `${model} does not exist` : `${model}: ${fused.reason}`}; pass --resume to fuse it without training again, or --force to train it again`,
          'OUTPUT_EXISTS',
        );
      }
      throw new UsageError(`stage ${stage} of ${run} is already complete (${join(dir, PROVENANCE_FILE)}); pass --force to train it again`, 'OUTPUT_EXISTS');
    }
  }
  const latest = planAsEmpty(options) ? undefined : await latestCheckpoint(checkpointsDir);
  if (latest !== undefined && !settings.resume && !settings.force) {
    throw new UsageError(`${dir} holds checkpoints of an interrupted run (${latest}); pass --resume to continue it or --force to start the stage over`, 'CHECKPOINTS_EXIST');
  }
  // --force deletes the stage folder before training: never with the stage's own inputs in it
  // (e.g. stage 1 trained again from the model the previous stage 1 fused into stages/1/model).
  if (settings.force && !planAsEmpty(options)) refuseInputsInsideOutput(dir, stageInputs(options, settings, inputDir), '--force');

  const remoteWeights = stage === 1 ? options.modelSource?.remoteWeights : undefined;
  if (remoteWeights && !settings.dryRun) throw new InternalError(`stage ${stage} would train from ${remoteWeights.repo}, whose weights were not downloaded (resolved for a dry run)`);
  const checkpoint = await prov.time('open', () => Checkpoint.open(inputDir, remoteWeights ? { remoteWeights } : {}));
  try {
    const described = describeCheckpoint(checkpoint);
    described.warnings.forEach(warn);
    const spec = described.spec;
    checkTokens(spec, options.train.sequences, dataSourceName(options.train.source));
    if (options.eval) checkTokens(spec, options.eval.sequences, dataSourceName(options.eval.source));
    const longest = Math.max(options.train.seqLen, options.eval?.seqLen ?? 0);
    const beyondContext = contextWarning(spec, longest, 'training sequences');
    if (beyondContext) warn(`${beyondContext}; lower ${names.seqLen} unless extending the context is the point`);
    const seeds = stageSeeds(settings.seed, stage);
    const setting = trainingSetting(settings);

    let lora: TrainablePlan['lora'];
    let matched: Awaited<ReturnType<typeof matchedLoraRank>> | undefined;
    if (settings.lora) {
      if (settings.lora.matchParams !== undefined) matched = await matchedLoraRank(resolve(settings.lora.matchParams), stage, spec, names.matchParams);
      const rank = settings.lora.rank ?? matched?.rank ?? DEFAULT_LORA_RANK;
      lora = { rank, ...(settings.lora.alpha !== undefined ? { alpha: settings.lora.alpha } : {}), seed: seeds.lora };
      const maxRank = maxLoraRank(spec);
      if (rank > maxRank) throw new UsageError(`${names.loraRank} must be an integer in [1, ${maxRank}] for this model (the smallest side of its projections), got ${rank}`);
      if (matched) {
        // The rank is capped at the projections' smallest side: say when that leaves the count short.
        const count = loraParamCount(spec, rank);
        if (Math.abs(count - matched.target) > loraParamCount(spec, 1)) {
          warn(`LoRA rank ${rank} (the largest this model allows) trains ${count.toLocaleString('en-US')} parameters, ${(100 * (count / matched.target - 1)).toFixed(1)}% from the ${matched.target.toLocaleString('en-US')} of ${matched.record}`);
        }
        say(`LoRA rank ${rank} matches the ${matched.target.toLocaleString('en-US')} trainable parameters of ${matched.record}`);
      }
    }
    // Decided before training, so a base the adapter cannot name fails now, not after the steps.
    const loraBase = settings.method === 'lora' ? adapterBase(stage, settings.model, inputDir, options.modelSource) : undefined;
    const { batchSize, gradAccum } = settings.optimizer;
    const seqLen = options.train.seqLen;
    const tokensPerStep = batchSize * gradAccum * seqLen;
    const steps = stageSteps(settings.budget, tokensPerStep);
    if ('tokens' in settings.budget && steps * tokensPerStep !== settings.budget.tokens) {
      warn(`${names.tokens} ${settings.budget.tokens}: training takes whole steps of ${tokensPerStep} tokens, so ${steps} step${steps === 1 ? '' : 's'} train ${steps * tokensPerStep} tokens`);
    }
    if (batchSize > options.train.sequences.length) {
      warn(`${names.batchSize} ${batchSize} is more than the ${options.train.sequences.length} training sequences: every step repeats some of them`);
    }
    const lr = await runLrPlan(run, stage, settings.totalStages, steps, options.lr, settings.optimizer.lr);
    if (stage > 1) {
      // Each stage starts from the one before: say when another apex build trained that one.
      const before = (await readJson(join(stageDir(run, stage - 1), PROVENANCE_FILE)).catch(() => undefined)) as { apex_version?: string } | undefined;
      if (typeof before?.apex_version === 'string' && before.apex_version !== apexVersion()) {
        warn(`stage ${stage - 1} of ${run} was trained by apex ${before.apex_version}, and apex ${apexVersion()} trains stage ${stage}: the run's stages come from two builds (each stage's apex_run.json records its own)`);
      }
    }
    // Batch, accumulation and length default per command, not per run: say when they changed.
    const before = lr.previous?.tokens_per_step;
    if (typeof before === 'number' && before !== tokensPerStep) {
      warn(`stage ${stage} trains ${tokensPerStep} tokens per step (batch ${batchSize} × accumulation ${gradAccum} × ${seqLen}), stage ${stage - 1} trained ${before}`);
    }
    let lrPlan = lr.plan;
    lr.notes.forEach(warn);
    const planWith = (selections: LayerSelection[] | undefined): TrainablePlan => ({
      setting,
      ...(selections ? { selections } : {}),
      trainEmbeddings: settings.selection.trainEmbeddings,
      operatorSeed: seeds.operators,
      ...(lora ? { lora } : {}),
    });
    // Memory first: a run that cannot fit is refused before the analysis writes anything.
    const sizing = planWith(settings.method === 'apex' ? await sizingSelections(settings, spec) : undefined);
    const direct = planDirectTrainables(spec, sizing);
    const sized = summarizePlan(spec, sizing);
    const memory = estimateTrainingMemory(spec, {
      batch: batchSize,
      ...(options.eval ? { evalBatch: settings.evalBatchSize, evalSeqLen: options.eval.seqLen } : {}),
      seqLen,
      trainableEntries: direct.reduce((n, t) => n + elementCount(t.shape), 0) + sized.operators + sized.adapters,
      trainedEntries: direct.reduce((n, t) => n + optimizerEntryCount(t), 0) + sized.operators + sized.adapters,
      largestTrainable: Math.max(0, ...direct.map((t) => elementCount(t.shape))),
      operators: settings.method === 'apex',
      lora: settings.method === 'lora',
      recompute: settings.recomputeActivations,
    });
    const training = { method: settings.method, setting: settings.setting ?? null };
    const evalBatch = options.eval && memory.sizedBy === 'evaluation' ? `, held-out evaluation batch ${settings.evalBatchSize}${options.eval.seqLen !== seqLen ? ` × ${options.eval.seqLen} tokens` : ''}` : '';
    const what = `training stage ${stage} (${setting}, batch ${batchSize} × ${seqLen} tokens${evalBatch})`;
    if (settings.maxMemoryBytes !== undefined) checkTrainingMemory(memory, settings.maxMemoryBytes, what, options.names?.batchSize === RUN_CONFIG_NAMES.batchSize ? CONFIG_MEMORY_ADVICE : undefined, training);
    // Recomputation advised where it brings the tensor memory under the heap.
    // In the caller's names (apex run: its config keys); apex finetune's is WASM_HEAP_ADVICE.
    const batchAdvice = `lower ${names.batchSize} or ${names.seqLen} (use ${names.gradAccum} to keep the batch), or use another backend (--backend webgpu, tensorflow or cpu)`;
    const heapAdvice = !memory.recompute && memory.tfHeapBytesWithRecompute <= WASM_HEAP_USABLE_BYTES ? `${names.recompute} (each layer's activations are recomputed in the backward pass, the same results), or ${batchAdvice}` : batchAdvice;
    await refuseOverWasmHeap(settings.backend as BackendRequest, memory, what, training, heapAdvice);
    if (onWebgpu()) {
      checkWebgpuBinding(spec, batchSize, longest, maxStorageBindingBytes(), `training stage ${stage} (${setting}, batch ${batchSize} × ${longest} tokens)`, `lower ${names.batchSize} or ${names.seqLen} (use ${names.gradAccum} to keep the batch)`);
      if (options.eval && settings.evalBatchSize > batchSize) {
        checkWebgpuBinding(spec, settings.evalBatchSize, options.eval.seqLen, maxStorageBindingBytes(), `the held-out evaluation of stage ${stage} (batch ${settings.evalBatchSize} × ${options.eval.seqLen} tokens)`, `lower ${names.evalBatchSize}`);
      }
    }

    let selections: LayerSelection[] | undefined;
    let scoresPath: string | undefined;
    let analysisSequences: number | null = null;
    let analysisMemory: AnalysisMemoryEstimate | null = null;
    // The input model's fingerprint, hashed once: checked against an existing analysis, recorded in provenance.
    let inputRecord: Promise<ModelRecord> | undefined;
    const inputModel = () => (inputRecord ??= modelRecord(checkpoint, spec, options.signal));
    if (settings.method === 'apex') {
      scoresPath = stageScoresPath(run, stage);
      let analyse = planAsEmpty(options) || !existsSync(scoresPath);
      if (analyse) {
        if (stage > 1) throw new InputError(`${scoresPath} does not exist: stage ${stage - 1} recorded no scores (was it an APEX stage, and did it finish?)`, 'NOT_FOUND');
        if (options.analysedByCaller !== true) say(`no ${scoresPath}: running the analysis first, on ${Math.min(settings.calibrationSamples, options.train.sequences.length)} of the ${options.train.sequences.length} training sequences (${names.calibrationSamples})`);
      } else if (stage === 1) {
        const mismatch = await analysisMismatch(scoresPath, { modelFingerprint: modelFingerprint(await inputModel()), ratio: settings.selection.ratio, countingK: stageCountingK(settings, spec) });
        if (mismatch !== undefined) {
          if (!settings.force) {
            throw new UsageError(`${scoresPath} ${mismatch}; pass --force to analyse ${inputDir} again (replacing ${join(run, 'analysis')}), or train into another -o folder`, 'ANALYSIS_MISMATCH');
          }
          warn(`${scoresPath} ${mismatch}: analysing again (--force)`);
          analyse = true;
        } else {
          // Made by apex analyze or an earlier stage 1, perhaps on other data than this training
          // set (which is legitimate: calibration data): say which, as it decides the units.
          const made = (await readJson(join(dirname(scoresPath), ANALYSIS_FILES.json)).catch(() => undefined)) as Partial<AnalysisJson> | undefined;
          const source = made?.data ? dataSourceName(made.data) : '';
          const on = made?.data ? `, calibrated on ${made.data.sequences} sequences${source ? ` of ${source}` : ''}` : '';
          say(`selecting stage 1's units by the existing analysis ${dirname(scoresPath)}${on}`);
        }
      }
      const analysisMemoryNames = { maxMemory: names.maxMemory, samples: names.calibrationSamples, batchSize: names.batchSize };
      if (analyse && settings.dryRun) {
        // What the analysis estimates and refuses before it starts, so the dry run refuses it too
        // (apex run plans its own, on the run's calibration data: run-plan.ts).
        if (options.analysedByCaller !== true) {
          analysisMemory = planAnalysisMemory(spec, unpadded(sampleSequences(options.train, settings.calibrationSamples, settings.seed)), {
            batchSize: settings.analysisBatchSize ?? settings.optimizer.batchSize,
            ...(settings.maxMemoryBytes !== undefined ? { maxMemory: settings.maxMemoryBytes } : {}),
            backend: (await selectBackend(settings.backend as BackendRequest)).name,
            names: analysisMemoryNames,
          });
          say(`analysis: ${describeMemoryEstimate(analysisMemory)}`);
          checkMemoryLimit(analysisMemory, settings.maxMemoryBytes, analysisMemoryNames);
        }
      } else if (analyse) {
        await prov.time('analysis', () =>
          runAnalysis({
            model: inputDir,
            output: join(run, 'analysis'),
            force: settings.force,
            data: sampleSequences(options.train, settings.calibrationSamples, settings.seed),
            batchSize: settings.analysisBatchSize ?? settings.optimizer.batchSize,
            ...(settings.maxMemoryBytes !== undefined ? { maxMemory: settings.maxMemoryBytes } : {}),
            memoryNames: analysisMemoryNames,
            ratio: settings.selection.ratio,
            seed: settings.seed,
            backend: settings.backend,
            ...(options.signal ? { signal: options.signal } : {}),
            progress: say,
            onWarning: warn,
          }),
        );
      }
      // A dry run that would analyse first has no scores to select by: the sizing selections have
      // the selection's counts, which is all its plan (trainable parameters, memory) depends on.
      selections = analyse && settings.dryRun ? (sizing.selections as LayerSelection[] | undefined) : await selectStageUnits(settings, spec, scoresPath);
      analysisSequences = analyse ? Math.min(settings.calibrationSamples, options.train.sequences.length) : null;
    }

    const plan = planWith(selections);
    const summary = summarizePlan(spec, plan);
    // What the stage's result says of it whether planned (dry run) or trained.
    const identity = {
      stage,
      dir,
      method: settings.method,
      setting: settings.setting ?? null,
      trainable: summary,
      lora: lora ? { rank: lora.rank, alpha: lora.alpha ?? 2 * lora.rank } : null,
      memoryEstimateBytes: memory.totalBytes,
    } satisfies Partial<StageResult>;
    say(`trainable parameters: ${summary.trainable.toLocaleString('en-US')} of ${summary.modelParams.toLocaleString('en-US')} (${(100 * summary.fraction).toFixed(2)}%), setting ${setting}`);
    const backend = await selectBackend(settings.backend as BackendRequest);
    say(`backend: ${backend.name} (${backend.detail}); memory estimate ${(memory.totalBytes / 2 ** 20).toFixed(0)} MiB`);

    const baseModel = stage === 1 ? settings.model : ((await runBaseModel(run)) ?? settings.model);
    // Held out of the training data (not separate --eval-data): which documents, for heldout.json.
    const heldout = options.eval?.heldout ?? options.train.heldout;
    let result: Awaited<ReturnType<typeof train>>;
    let files: string[];
    let metrics: MetricsLine[];
    // The checkpoint's scalars and its tensors file's header; the trainer reads the tensors (and
    // checks their sha256) one at a time as it restores them, so a dry run does not see a
    // corrupt tensor, which the stage then refuses (CHECKPOINT_CORRUPT).
    const resumeState = settings.resume && latest !== undefined ? await loadTrainState(latest) : undefined;
    const resumeFrom = settings.dryRun ? undefined : resumeState;
    const recorderShape = settings.method === 'apex' ? stageRecorderShape(settings, spec) : undefined;
    // The resume key hashes the input model: a dry run makes it only to compare with a checkpoint.
    const resumeKey = settings.dryRun && !resumeState ? undefined : stageResumeKey({
      method: settings.method,
      setting: settings.setting ?? null,
      selections,
      recorder: recorderShape,
      trainEmbeddings: settings.selection.trainEmbeddings,
      lora: lora ? { rank: lora.rank, alpha: lora.alpha ?? 2 * lora.rank } : undefined,
      ...settings.optimizer,
      inputModel: modelFingerprint(await inputModel()),
      heldOut: options.eval ? sequenceSetDigest(options.eval) : null,
      trainLengths: options.train.lengths,
    });
    if (resumeState && resumeState.scalars.settings === undefined) {
      // Written before checkpoints recorded what they were trained with (2026-11-27): nothing can
      // be compared, and the rules of that apex (learning-rate warm-up, unit selection) differ.
      throw new UsageError(
        `${resumeState.path} was made by an earlier apex that did not record the settings it trained with, and how a stage trains has changed since (learning-rate warm-up, unit selection): resuming would finish the stage as a mix of two versions. ` +
          (names.batchSize === RUN_CONFIG_NAMES.batchSize
            ? `Delete ${dir} and run the same apex run command again to train stage ${stage} from its start (the run's other stages are kept), or finish the run with the apex that began it`
            : `Pass --force to train stage ${stage} again (or finish it with the apex that began it)`),
        'CHECKPOINT_MISMATCH',
      );
    }
    if (resumeState) {
      const madeWith = JSON.stringify(resumeState.scalars.lrPlan);
      if (madeWith !== JSON.stringify(lrPlan) && lr.rebuilt !== undefined && madeWith === JSON.stringify(lr.rebuilt)) {
        // Begun by an apex that rebuilt the plan from this stage's own steps: it ends on that plan.
        warn(`${resumeState.path} was made by an earlier apex, whose learning-rate plan for a stage of other length than planned started over from this stage's steps; the stage ends on that plan`);
        lrPlan = lr.rebuilt;
      }
      if (madeWith !== JSON.stringify(lrPlan)) {
        throw new UsageError(`${resumeState.path} was made with another learning-rate plan (different --lr, --steps/--tokens, batch or --total-stages); resume with the options of the interrupted run`, 'CHECKPOINT_MISMATCH');
      }
      // A dry run that would analyse first sized the stage with stand-in units: the checkpoint's
      // units are compared by the stage itself, after its analysis.
      const standIn = settings.dryRun && analysisSequences !== null;
      const changes = resumeKeyChanges(resumeState.scalars.settings, resumeKey!).filter((c) => !(standIn && c.startsWith('selected units')));
      if (standIn) say('the checkpoint\'s selected units are compared after the analysis, which the dry run does not run');
      if (changes.length > 0) {
        throw new UsageError(
          `${resumeState.path} was made with other settings: ${changes.join('; ')}. Resuming would finish the stage as a mix of two runs; resume with the options of the interrupted run, or pass --force to start the stage over`,
          'CHECKPOINT_MISMATCH',
        );
      }
      const madeOn = resumeState.scalars.backend;
      if (madeOn !== undefined && madeOn !== backend.name) {
        warn(`${resumeState.path} was made on the ${madeOn} backend and training continues on ${backend.name}: the result differs from an uninterrupted run by float rounding`);
      }
      say(`resuming stage ${stage} from step ${resumeState.scalars.step} (${resumeState.path})`);
    } else if (settings.resume) {
      // A warning, not a passing status line: asked to resume, the user must learn that nothing
      // was there (a mistyped -o or --stage trains from scratch), also in plain and --json output.
      warn(`nothing to resume: no checkpoint in ${checkpointsDir}; stage ${stage} starts from step 0`);
    }
    if (settings.dryRun) {
      // Everything the stage checks has been checked (a checkpoint to resume from too); it would
      // train now, after the trainer's own check of room for one checkpoint. Its tensors
      // (parameters and both AdamW moments, F32) are asked for; the headers, digests and score
      // counts besides (a few % more) are not: what the dry run refuses, the stage refuses too.
      // Less what the stage frees first (--force deletes the stage folder, apex run --force the
      // whole run folder, before the trainer looks); none for a plan wanted for its figures only.
      if (!options.planFiguresOnly && (resumeState?.scalars.step ?? 0) < steps) {
        const freed = planAsEmpty(options) ? await folderBytes(run) : settings.force ? await folderBytes(dir) : 0;
        await checkTrainStateSpace(checkpointsDir, Math.max(0, 12 * summary.trainable - freed));
      }
      return {
        ...identity,
        status: 'planned',
        steps,
        startStep: resumeState?.scalars.step ?? 0,
        tokens: steps * tokensPerStep,
        finalLoss: null,
        eval: null,
        tokensPerSecond: 0,
        files: [],
        modelDir: null,
        peakRssBytes: 0,
        plan: {
          batchSize,
          gradAccum,
          seqLen,
          tokensPerStep,
          eval: options.eval ? { batchSize: settings.evalBatchSize, seqLen: options.eval.seqLen, sequences: options.eval.sequences.length } : null,
          trainSequences: options.train.sequences.length,
          peakLr: lrPlan.peakLr,
          analysisSequences,
          analysisMemory,
          memory,
          backend: `${backend.name} (${backend.detail})`,
        },
      };
    }
    if (settings.force) await rm(dir, { recursive: true, force: true });
    await makeOutputFolder(dir);
    const trainables = await prov.time('load', () => buildStageTrainables(checkpoint, spec, plan));
    const recorder = recorderShape ? new TrainingScoreRecorder(resumeFrom?.scalars.recorder ?? recorderShape) : undefined;
    try {
      result = await prov.time('train', () =>
        train({
          model: trainables.model,
          params: trainables.params,
          hooks: trainables.hooks,
          ...(recorder ? { recorder } : {}),
          train: options.train,
          ...(options.eval ? { eval: options.eval } : {}),
          stage,
          steps,
          lrPlan,
          globalStepOffset: lr.offset,
          batchSize,
          gradAccum,
          evalBatchSize: settings.evalBatchSize,
          ...(settings.recomputeActivations ? { recomputeActivations: true } : {}),
          gradClip: settings.optimizer.gradClip,
          adamw: { beta1: settings.optimizer.beta1, beta2: settings.optimizer.beta2, weightDecay: settings.optimizer.weightDecay },
          evalEvery: settings.evalEvery,
          saveEvery: settings.saveEvery,
          keepCheckpoints: settings.keepCheckpoints,
          checkpointsDir,
          metricsPath: join(dir, METRICS_FILE),
          dataSeed: seeds.data,
          ...(resumeFrom ? { resumeFrom } : {}),
          resumeKey: resumeKey!,
          backend: backend.name,
          ...(options.signal ? { signal: options.signal } : {}),
          progress: say,
          ...(options.onStep ? { onStep: options.onStep } : {}),
          ...(options.prepareTransforms !== undefined ? { prepareTransforms: options.prepareTransforms } : {}),
          ...(options.resumeHint !== undefined ? { resumeHint: options.resumeHint } : {}),
        }),
      );
      metrics = await readMetrics(join(dir, METRICS_FILE));
      const tensors = await collectStageTensors(spec, trainables);
      files = await prov.time('write', () =>
        writeStageFiles({
          dir,
          spec,
          stage,
          tensors,
          ...(settings.method === 'apex' ? { operatorMeta: { apexVersion: apexVersion(), stage, ratio: settings.selection.ratio, setting: settings.setting!, seed: settings.seed } } : {}),
          ...(recorder ? { recorder, scoreMetadata: { source: 'apex finetune', stage: String(stage), seed: String(settings.seed) } } : {}),
          trainedMetadata: { stage: String(stage), setting },
          metrics,
          ...(loraBase ? { adapterBase: loraBase } : {}),
          ...(heldout ? { heldout } : {}),
        }),
      );
    } finally {
      trainables.dispose();
      recorder?.dispose();
    }
    const last = metrics.at(-1);
    const lastEval = lastEvaluation(metrics);
    const details: StageDetails = {
      stage,
      total_stages: lr.totalStages,
      method: settings.method,
      setting: settings.setting ?? null,
      steps,
      tokens_per_step: tokensPerStep,
      trainable: summary,
      selection_settings: settings.method === 'apex' ? settings.selection : null,
      selection: selections?.map((s) => ({ layer: s.layer, head_k: s.headK, channel_k: s.channelK, heads: unitLists(s.heads), channels: unitLists(s.channels) })) ?? null,
      recorder_k: recorderShape ? { head: recorderShape.headK, channel: recorderShape.channelK } : null,
      lora: lora ? { rank: lora.rank, alpha: lora.alpha ?? 2 * lora.rank, ...(matched ? { matched_to: matched.record, target: matched.target } : {}) } : null,
      optimizer: { ...settings.optimizer, lr: lrPlan.peakLr },
      budget: settings.budget,
      lr_plan: lrPlan,
      global_step_offset: lr.offset,
      seeds,
      data: { train: options.train.source, ...(options.eval ? { eval: options.eval.source } : {}), ...(heldout ? { heldout_file: HELDOUT_FILE } : {}) },
      // How the held-out evaluations ran (provenance; the batch changes speed and memory, not the
      // held-out loss, so it is not compared on --resume).
      ...(options.eval ? { eval: { every: settings.evalEvery, batch_size: settings.evalBatchSize } } : {}),
      // Provenance only: recomputation changes speed and memory, not the results (bit for bit), so
      // it is not compared on --resume either.
      recompute_activations: settings.recomputeActivations,
      // A stage interrupted and resumed with the other setting: which steps ran with which.
      ...(result.recomputeFrom.length > 1 ? { recompute_activations_from: result.recomputeFrom.map((r) => ({ from_step: r.fromStep, recompute: r.recompute })) } : {}),
      memory_estimate: memory,
      results: {
        steps: result.steps,
        start_step: result.startStep,
        tokens: result.tokens,
        final_loss: lastTrainingLoss(metrics),
        eval_loss: lastEval?.loss ?? null,
        eval_ppl: lastEval?.ppl ?? null,
        tokens_per_s: result.tokensPerSecond,
        elapsed_s: last?.elapsed ?? 0,
      },
    };
    const model = await inputModel();
    const inputs: Record<string, FileSetRecord> = { model: { path: model.path, files: model.files } };
    if (scoresPath) inputs.scores = { path: scoresPath, files: [{ ...(await sha256OfFile(scoresPath)), file: basename(scoresPath) }] };
    const outputs: FileRecord[] = [];
    for (const f of [...files, METRICS_FILE]) outputs.push({ ...(await sha256OfFile(join(dir, f))), file: f });
    await writeProvenance(dir, prov.build({ seed: settings.seed, backend, base_model: baseModel, inputs, outputs: { stage: { path: dir, files: outputs } }, details }));
    say(`stage ${stage} written to ${dir}`);
    const modelDir = settings.expand ? await fuse(run, stage, say, options.signal) : null;
    return {
      ...identity,
      status: 'trained',
      steps: result.steps,
      startStep: result.startStep,
      tokens: result.tokens,
      finalLoss: lastTrainingLoss(metrics),
      eval: lastEvaluation(metrics),
      tokensPerSecond: result.tokensPerSecond,
      files,
      modelDir,
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await checkpoint.close();
  }
}

/**
 * A stage writes analysis/ and stages/ into its run folder: a folder that holds other things and
 * none of a run's (someone's project folder given as -o by mistake) is refused, as analyze and
 * run refuse a non-empty output.
 */
function refuseForeignFolder(run: string): void {
  if (!existsSync(run)) return;
  // apex's own work in progress (a killed analysis leaves analysis.tmp-<pid>-<hex> and analysis.lock) counts as a run's.
  const entries = readdirSync(run).filter((n) => !n.startsWith('.'));
  const runs = (n: string) => RUN_FOLDER_ENTRIES.has(n) || RUN_FOLDER_ENTRIES.has(inProgressName(n)?.target ?? n) || RUN_FOLDER_ENTRIES.has(n.replace(/\.lock$/, ''));
  if (entries.length === 0 || entries.some(runs)) return;
  const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? `, … (${entries.length} entries)` : '');
  throw new UsageError(`-o ${run} holds ${shown} and is not an apex run folder (no analysis/, stages/ or run.json); give a new folder or an existing run`, 'OUTPUT_NOT_A_RUN');
}

const RUN_FOLDER_ENTRIES = new Set(['analysis', 'stages', 'run.json']);

const TOKENIZER_FILES = MODEL_FILES.filter((f) => f !== 'config.json' && f !== 'generation_config.json');

/** The tokenizer files (of MODEL_FILES) that one folder has and the other lacks, or that differ. */
async function differingTokenizerFiles(a: string, b: string): Promise<string[]> {
  const read = (dir: string, name: string) => readFile(join(dir, name)).catch(() => undefined);
  const out: string[] = [];
  for (const name of TOKENIZER_FILES) {
    const [x, y] = await Promise.all([read(a, name), read(b, name)]);
    if (x === undefined && y === undefined) continue;
    if (x === undefined || y === undefined || !x.equals(y)) out.push(name);
  }
  return out;
}

/** Two model arguments name the same model: the same local folder (links resolved), or the same Hub id. */
function sameModelArgument(a: string, b: string): boolean {
  if (a === b) return true;
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return undefined;
    }
  };
  const ra = real(a);
  return ra !== undefined && ra === real(b);
}

/**
 * The loss of the last step logged. Not simply the last line's: an evaluation that Ctrl-C stopped
 * and the resumed run ran is logged after its step's line, on an eval-only line of its own.
 */
function lastTrainingLoss(metrics: readonly MetricsLine[]): number | null {
  return metrics.findLast((l) => l.loss !== undefined)?.loss ?? null;
}

function lastEvaluation(metrics: readonly MetricsLine[]): { loss: number; ppl: number } | null {
  const line = [...metrics].reverse().find((l) => l.eval_loss !== undefined);
  return line ? { loss: line.eval_loss!, ppl: line.eval_ppl! } : null;
}

function unitLists(s: { P: Int32Array; N: Int32Array; E: Int32Array }): { P: number[]; N: number[]; E: number[] } {
  return { P: Array.from(s.P), N: Array.from(s.N), E: Array.from(s.E) };
}

/**
 * `apex expand --run <run> --stage n` unless the stage's fused model is complete and verified
 * (pipeline/fused-model-state.ts); an incomplete or outdated one is fused again over.
 */
async function fuse(run: string, stage: number, say: (m: string) => void, signal: AbortSignal | undefined): Promise<string> {
  const out = join(stageDir(run, stage), 'model');
  const state = await fusedModelState(run, stage);
  if (state.kind === 'complete') return out;
  if (state.kind === 'stale') say(`${out}: ${state.reason}; fusing stage ${stage} again`);
  await runExpand({ run, stage, progress: say, force: state.kind === 'stale', ...(signal ? { signal } : {}) });
  return out;
}

/** A resumed stage that had already finished: its record, and the fused model if it is missing. */
async function completedStage(settings: ResolvedStageSettings, options: StageOptions, dir: string, say: (m: string) => void): Promise<StageResult> {
  const signal = options.signal;
  const record = (await readJson(join(dir, PROVENANCE_FILE))) as { seed?: number | null; details?: StageDetails; outputs?: { stage?: FileSetRecord }; peak_rss_bytes?: number };
  const d = record.details;
  if (d === undefined) throw new InputError(`${join(dir, PROVENANCE_FILE)}: no trainer details; not a stage record`, 'BAD_RECORD');
  const { lr: _peak, ...optimizer } = settings.optimizer;
  const source = options.train.source;
  const changes = completedStageChanges(d, {
    method: settings.method,
    setting: settings.setting ?? null,
    lr: options.lr,
    optimizer,
    budget: settings.budget,
    selection: settings.selection,
    lora: settings.lora ? { ...(settings.lora.rank !== undefined ? { rank: settings.lora.rank } : {}), ...(settings.lora.alpha !== undefined ? { alpha: settings.lora.alpha } : {}) } : undefined,
    totalStages: settings.totalStages,
    train: { sha256: source.sha256, seqLen: source.seqLen, sequences: source.sequences },
  });
  // The seed draws the data order, the operators' or adapters' start and the held-out split.
  if (typeof record.seed === 'number' && record.seed !== settings.seed) changes.push(`seed ${record.seed} then, ${settings.seed} now`);
  if (changes.length > 0) {
    throw new UsageError(
      `stage ${settings.stage} of ${resolve(settings.run)} is complete, trained with other settings: ${changes.join('; ')} (${join(dir, PROVENANCE_FILE)}). ` +
        'Resume it with the options it was trained with to reuse it, or pass --force to train it again',
      'STAGE_MISMATCH',
    );
  }
  await checkStageOutputs(resolve(settings.run), settings.stage, 'pass --force to train the stage again');
  say(`stage ${settings.stage} is already complete (${join(dir, PROVENANCE_FILE)})`);
  const results = d.results as { steps: number; start_step: number; tokens: number; final_loss: number | null; eval_loss: number | null; eval_ppl: number | null; tokens_per_s: number };
  const lora = d.lora as { rank: number; alpha: number } | null;
  const modelDir = settings.expand ? await fuse(resolve(settings.run), settings.stage, say, signal) : null;
  return {
    stage: settings.stage,
    dir,
    method: d.method as StageResult['method'],
    setting: (d.setting ?? null) as StageResult['setting'],
    status: 'complete',
    steps: results.steps,
    startStep: results.start_step,
    tokens: results.tokens,
    trainable: d.trainable,
    lora: lora ? { rank: lora.rank, alpha: lora.alpha } : null,
    finalLoss: results.final_loss,
    eval: results.eval_loss !== null ? { loss: results.eval_loss, ppl: results.eval_ppl! } : null,
    tokensPerSecond: results.tokens_per_s,
    files: (record.outputs?.stage?.files ?? []).map((f) => f.file),
    modelDir,
    memoryEstimateBytes: (d.memory_estimate as { totalBytes: number }).totalBytes,
    peakRssBytes: record.peak_rss_bytes ?? 0,
  };
}
