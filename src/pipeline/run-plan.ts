/**
 * `apex run --dry-run`: what a run of this config would do, found by what a run checks before
 * it trains, with nothing written (no run folder, lock or record; of a Hub model not yet cached
 * the config and tokenizer files are downloaded, as a run would, but of its weight files only the
 * safetensors headers are read from the Hub; the token cache is filled as a run would): the checks made before the run folder
 * exists (run.ts checkBeforeWriting), what the run folder holds (a new run; this config's run to
 * resume, its recorded base model and data compared with today's; with --force, the inputs it
 * must not delete; or the refusal a run would meet), the data read and tokenized, and for the
 * run's line and the vanilla baseline which stages are complete and the first stage planned by
 * the stage trainer itself (train/stage.ts, dry run: steps, tokens, trainable parameters, the
 * memory estimate, which refuses a budget it exceeds). Later stages train the same shapes for
 * the same budget; only with `stages.decay_k` do they select fewer units.
 */
import { existsSync } from 'node:fs';
import { refuseFileInOutputPath } from '../io/atomic-output.js';
import { refuseLockNameTooLong } from '../io/output-lock.js';
import { join, resolve } from 'node:path';
import { stageDir } from './expand-paths.js';
import { ANALYSIS_FILES } from './analysis-json.js';
import { checkMemoryLimit, describeMemoryEstimate, planAnalysisMemory, type AnalysisMemoryEstimate } from './analysis-memory.js';
import { unpadded } from './analyze.js';
import { planForward } from '../model/memory-estimate.js';
import { DEFAULT_MAX_MEMORY_BYTES } from '../model/streaming-forward.js';
import { tfHeapAllowance } from '../model/wasm-heap-limit.js';
import { maxStorageBindingBytes } from '../ops/webgpu-programs.js';
import { ANALYSIS_FOLDER, RUN_ANALYSIS_MEMORY_NAMES } from './run-steps.js';
import { weightsToDownload, type WeightsToDownload } from '../io/hub-headers.js';
import type { ResolvedRunConfig } from '../run/config.js';
import { CHECKPOINTS_DIR, RUN_CONFIG_NAMES, runStage, type StageResult } from '../train/stage.js';
import { listCheckpoints } from '../train/train-state.js';
import { checkBeforeWriting, checkRecordedInputs, dataRecords, refuseChangedData, refuseInputsInsideRun, type DataRecords } from './run.js';
import { stageComplete } from './run-line.js';
import { PROVENANCE_FILE } from './provenance.js';
import type { BaseModelRecord } from './run-summary.js';
import { loadRunData } from './run-data.js';
import { BASELINE_FOLDER, stageSettings, type TrainingLine } from './run-stage-settings.js';
import { RunState, type RunStart } from './run-state.js';

export interface RunLinePlan {
  readonly name: string;
  readonly method: string;
  readonly setting: string | null;
  readonly stages: number;
  /** Stages of the line already complete in the run folder (a resumed run skips them). */
  readonly complete: number[];
  /** Stages trained but not (completely) fused: the run fuses them, training nothing. */
  readonly fuse: number[];
  /** The first stage the run would train; null when none is left. */
  readonly next: number | null;
  /** The checkpoint step that stage resumes from (0: from its start). */
  readonly resumeStep: number;
  /**
   * The next stage to train as the stage trainer plans it (status `planned`; `startStep` > 0 when
   * it resumes from a checkpoint); else stage 1 planned as new, for the figures.
   */
  readonly stage: StageResult;
  /** Tokens all stages of the line train. */
  readonly tokens: number;
  /** Of them, what is left to train. */
  readonly toTrain: number;
}

export interface RunPlan {
  readonly dryRun: true;
  readonly run: string;
  /** What the run folder holds: a new run, this config's run (resumed: its completed steps skipped), or discarded (--force). */
  readonly start: RunStart;
  /** download: what the run would download of a Hub model's weights (the dry run read their headers); null when local or cached. */
  readonly model: { readonly dir: string; readonly parameters: number; readonly layers: number; readonly download: WeightsToDownload | null };
  readonly backend: string;
  /** Sequences of each set; calibration: what the analysis reads (method apex), else null. */
  readonly data: { readonly train: number; readonly eval: number; readonly calibration: number | null; readonly seqLen: number };
  /** The analysis the run would make before its stages (method apex, when the folder holds none). */
  readonly analysis: { readonly sequences: number; readonly memory: AnalysisMemoryEstimate } | null;
  readonly lines: RunLinePlan[];
}

export async function planRun(options: {
  readonly resolved: ResolvedRunConfig;
  readonly force?: boolean;
  readonly signal?: AbortSignal;
  readonly status?: (message: string) => void;
  readonly onWarning?: (message: string) => void;
}): Promise<RunPlan> {
  const { config } = options.resolved;
  const status = options.status ?? (() => {});
  const onWarning = options.onWarning ?? (() => {});
  const signal = options.signal;
  const run = resolve(config.output);
  const { base, tokenizer, backend } = await checkBeforeWriting(config, signal, status, 'headers');
  // The run then locks its folder (<run>.lock beside it): a name that lock cannot have is refused as the run refuses it.
  await refuseLockNameTooLong(run);
  // The run would create its folder (exit 2 where a part of the path is a file); the dry run creates none.
  await refuseFileInOutputPath(run);
  const folder = await RunState.peek(run, config, { force: options.force ?? false });
  if (folder.start === 'restarted') refuseInputsInsideRun(run, base.dir, config);
  for (const c of folder.neutralChanges) onWarning(`${c.key} is ${JSON.stringify(c.now)} now, ${JSON.stringify(c.then)} when ${run} last ran: ${c.why}; the run would continue with the new value`);
  const known = { model: folder.steps.model?.result as BaseModelRecord | undefined, data: folder.steps.data?.result as DataRecords | undefined };
  // Hashing the base model is what comparing it costs: only a run to resume has a record to compare.
  if (known.model !== undefined || known.data !== undefined) await checkRecordedInputs(run, config, base, known, signal, status);
  status('loading data');
  const data = await loadRunData(config, tokenizer, onWarning, signal, status);
  refuseChangedData(run, known.data, dataRecords(data));
  // The run measures the base model's held-out perplexity first (unless it has): a streaming
  // forward within max_memory, which refuses when one sequence cannot fit (exit 5).
  if (folder.steps['eval/before'] === undefined) {
    const seqLen = Math.max(...data.eval.sequences.map((s) => s.length));
    const budget = config.max_memory ?? DEFAULT_MAX_MEMORY_BYTES;
    planForward(base.spec, data.eval.sequences.length, seqLen, budget, Math.min(config.eval.batch_size, data.eval.sequences.length), tfHeapAllowance(backend.name), maxStorageBindingBytes(), RUN_ANALYSIS_MEMORY_NAMES.maxMemory);
  }
  // The run analyses the calibration data before its stages (method apex; a resumed run whose
  // folder holds the analysis skips it): estimated, and refused over max_memory, as it would be.
  let analysis: RunPlan['analysis'] = null;
  if (config.method === 'apex' && (folder.start !== 'resumed' || !existsSync(join(run, ANALYSIS_FOLDER, ANALYSIS_FILES.json)))) {
    const sequences = unpadded(data.calibration!);
    const memory = planAnalysisMemory(base.spec, sequences, {
      batchSize: config.optimizer.batch_size,
      ...(config.max_memory !== null ? { maxMemory: config.max_memory } : {}),
      backend: backend.name,
      names: RUN_ANALYSIS_MEMORY_NAMES,
    });
    status(`analysis: ${describeMemoryEstimate(memory)}`);
    checkMemoryLimit(memory, config.max_memory ?? undefined, RUN_ANALYSIS_MEMORY_NAMES);
    analysis = { sequences: sequences.length, memory };
  }
  const lines: TrainingLine[] = [
    { key: 'run', name: config.method === 'apex' ? 'APEX' : config.method, method: config.method, folder: run },
    ...(config.baseline.vanilla ? [{ key: BASELINE_FOLDER, name: 'vanilla', method: 'vanilla' as const, folder: join(run, BASELINE_FOLDER) }] : []),
  ];
  const planned: RunLinePlan[] = [];
  for (const line of lines) {
    // As trainLine walks the stages: a stage is complete when its record and its fused model are
    // (skipped); one trained but not (completely) fused is fused and the walk goes on; the first
    // other one trains (an interrupted one resumes from its checkpoint, whose settings are
    // checked). That stage is planned as trainLine would call it; when none can be (every stage
    // complete, or the stage after one to be fused, whose input model is not there yet), stage 1
    // is planned as new, for the figures only.
    const planStage = (n: number, fresh: boolean, figuresOnly: boolean) =>
      runStage({
        ...stageSettings(config, line, n, config.model),
        dryRun: true,
        ...(fresh ? { resume: false, force: true, planAsEmpty: true } : { resume: existsSync(stageDir(line.folder, n)) }),
        ...(figuresOnly ? { planFiguresOnly: true } : {}),
        analysedByCaller: true,
        names: RUN_CONFIG_NAMES,
        modelDir: base.dir,
        modelSource: base.resolved,
        train: data.train,
        ...(config.eval.every !== null ? { eval: data.eval } : {}),
        ...(signal ? { signal } : {}),
        progress: (m) => status(`${line.name}: ${m}`),
        onWarning,
      });
    const complete: number[] = [];
    const fuse: number[] = [];
    let next: number | null = null;
    let nextPlan: StageResult | undefined;
    // The checkpoint step a stage after one to be fused again resumes from (it cannot be planned
    // before that fusion: its input model is not there yet).
    let resumeStep = 0;
    if (folder.start !== 'resumed') {
      next = 1;
      nextPlan = await planStage(1, true, false);
    } else {
      for (let n = 1; n <= config.stages.count; n++) {
        // After a stage to be fused again, the next is judged as it will be then (fusion is
        // deterministic: the same model as the one it trained from).
        if (await stageComplete(line.folder, n, { previousFusedAgain: fuse.at(-1) === n - 1 })) {
          complete.push(n);
          continue;
        }
        if (existsSync(join(stageDir(line.folder, n), PROVENANCE_FILE))) {
          // Trained (its record is there), its fused model missing or stale: the stage's --resume
          // checks the record against the settings and fuses it again; nothing trains. Checked
          // here when its input model is there (not after another stage still to be fused).
          if (fuse.length === 0) await planStage(n, false, false);
          fuse.push(n);
          continue;
        }
        if (fuse.length === 0) nextPlan = await planStage(n, false, false);
        else resumeStep = (await listCheckpoints(join(stageDir(line.folder, n), CHECKPOINTS_DIR))).at(-1)?.step ?? 0;
        next = n;
        break;
      }
    }
    const figures = nextPlan ?? (await planStage(1, true, true));
    // The run analyses once, before its stages (data.calibration: `analysis` above), not inside a stage.
    const stage = { ...figures, plan: { ...figures.plan!, analysisSequences: null } };
    const remaining = config.stages.count - complete.length - fuse.length;
    planned.push({
      name: line.name,
      method: line.method,
      setting: stage.setting ?? null,
      stages: config.stages.count,
      complete,
      fuse,
      next,
      resumeStep: nextPlan ? nextPlan.startStep : resumeStep,
      stage,
      tokens: config.stages.count * stage.tokens,
      toTrain: remaining * stage.tokens - (nextPlan ? nextPlan.startStep : resumeStep) * stage.plan.tokensPerStep,
    });
  }
  return {
    dryRun: true,
    run,
    start: folder.start,
    model: { dir: base.dir, parameters: base.parameters, layers: base.spec.numLayers, download: weightsToDownload(base.resolved.remoteWeights) },
    backend: `${backend.name} (${backend.detail})`,
    analysis,
    data: { train: data.train.sequences.length, eval: data.eval.sequences.length, calibration: data.calibration?.sequences.length ?? null, seqLen: data.train.seqLen },
    lines: planned,
  };
}
