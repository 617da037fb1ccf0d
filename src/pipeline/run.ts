/**
 * `apex run`: the whole multi-stage pipeline from one resolved config, readable top to bottom:
 *
 *   1. checks that need no writing: the base model resolved and readable, its tokenizer, every
 *      data source present, the backend available;
 *   2. the run folder: its lock, then run.json (new, resumed, or refused / restarted with
 *      force); the base model's fingerprint; the data (loaded on first use);
 *   3. held-out perplexity of the base model ("before");
 *   4. method apex: the advantage assessment on the calibration data (`<run>/analysis/`);
 *   5. every stage: train (select → operators → train → fuse into `stages/<n>/model/`), then
 *      held-out perplexity of the fused model;
 *   6. the vanilla baseline with the same data, seed, budget and learning-rate plan
 *      (`<run>/baseline/vanilla/`), measured the same way;
 *   7. `summary.json` and `index.html`.
 * Every step already complete in the run folder is skipped, so a rerun of the same config
 * continues where the last one stopped. A failed run removes a run folder it created itself
 * when that holds nothing to resume from (failed-run-folder.ts). Ctrl-C stops at the next safe point with the training
 * checkpoints saved (InterruptedError, exit 130).
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { maxLoraRank } from '../train/lora.js';
import { matchedLoraRank } from '../train/stage-records.js';
import { expectedTensors } from '../model/architecture.js';
import { refuseInputsInsideOutput } from '../io/output-inputs.js';
import { BUILTIN_PREFIX } from '../run/config-schema.js';
import { selectBackend, type BackendRequest } from '../model/backend.js';
import { loadTokenizer } from '../model/tokenizer.js';
import type { ResolvedRunConfig } from '../run/config.js';
import type { DataSpecRecord } from '../train/data.js';
import { writeTextAtomic } from '../train/stage-outputs.js';
import { checkTrainingMemory, CONFIG_MEMORY_ADVICE, estimateTrainingMemory } from '../train/stage-memory.js';
import type { ModelSpec } from '../model/model-spec.js';
import { ANALYSIS_FILES } from './analysis-json.js';
import { apexVersion } from './analysis-provenance.js';
import type { RunContext } from './run-context.js';
import { checkDataPaths, checkRunTokenizer, dataSource, loadRunData, runDataFileProblem, trainSource, type RunData } from './run-data.js';
import { builtinCorpus, installIndependentName } from '../train/data-corpus.js';
import { expandDataPaths, sha256File } from '../train/data-sources.js';
import { trainLine } from './run-line.js';
import { removeUnresumableRunFolder } from './failed-run-folder.js';
import { RunLock } from './run-lock.js';
import { baseModelRecord, resolveBaseModel } from './run-model.js';
import { MODEL_FILES } from '../io/model-files.js';
import { renderRunReport } from './run-report.js';
import { fileChanges } from '../util/file-changes.js';
import { collectRunReportInputs } from './run-report-inputs.js';
import { BASELINE_FOLDER } from './run-stage-settings.js';
import { RunState } from './run-state.js';
import { ANALYSIS_FOLDER, assessAdvantage, measureBaseModel } from './run-steps.js';
import { assembleRunSummary, RUN_REPORT_FILE, writeRunSummary, type BaseModelRecord, type RunSummary, type RunSummaryParts } from './run-summary.js';
import { makeOutputFolder } from '../io/atomic-output.js';
import { refuseLockNameTooLong } from '../io/output-lock.js';

export interface RunPipelineOptions {
  readonly resolved: ResolvedRunConfig;
  /** Discard an existing run folder and start over. */
  readonly force?: boolean;
  /** The command line, for the provenance records. */
  readonly argv?: readonly string[];
  readonly signal?: AbortSignal;
  /** Permanent progress lines (stderr). */
  readonly log?: (message: string) => void;
  /** Transient status (a spinner on a terminal, throttled lines elsewhere). */
  readonly status?: (message: string) => void;
  readonly onWarning?: (message: string) => void;
}

export interface DataRecords {
  readonly train: DataSpecRecord;
  readonly eval: DataSpecRecord;
  readonly calibration: DataSpecRecord | null;
}

/** Size and modification time of each file (null when missing): a cheap test of whether to hash again. */
async function fileStats(dir: string, files: readonly { file: string }[]): Promise<(readonly [number, number] | null)[]> {
  return Promise.all(files.map(async (f) => {
    const st = await stat(join(dir, f.file)).catch(() => undefined);
    return st ? ([st.size, st.mtimeMs] as const) : null;
  }));
}

/**
 * fileChanges for the base model. Records of runs begun before apex hashed the tokenizer and
 * generation files hold only config.json among them: those files are not "new" there.
 */
function modelFileChanges(before: readonly { file: string; sha256: string }[], now: readonly { file: string; sha256: string }[]): string[] {
  const olderRecord = !before.some((f) => f.file !== 'config.json' && MODEL_FILES.includes(f.file));
  const hashedThen = new Set(before.map((f) => f.file));
  return fileChanges(before, olderRecord ? now.filter((f) => hashedThen.has(f.file) || !MODEL_FILES.includes(f.file)) : now);
}

function dataChanges(kind: string, before: DataSpecRecord | null, now: DataSpecRecord | null): string[] {
  if (before === null || now === null) return before === now ? [] : [`${kind} data ${before === null ? 'added' : 'removed'}`];
  const changed = fileChanges(recordFiles(before), recordFiles(now)).map((c) => `${kind}: ${c}`);
  if (changed.length === 0 && (before.documents !== now.documents || before.tokens !== now.tokens)) {
    changed.push(`${kind}: the same files give ${now.documents} documents / ${now.tokens} tokens now, ${before.documents} / ${before.tokens} then (an apex version that tokenizes or samples them differently?)`);
  }
  return changed;
}

/**
 * The data files' hashes against the run's record, without tokenizing: a finished run never loads
 * its data, so the full comparison (dataChanges, when the data is loaded) would not see a changed
 * file there. Files are listed as the loader lists them (folders expanded, built-ins by name).
 */
async function dataFileChanges(config: ResolvedRunConfig['config'], known: DataRecords): Promise<string[]> {
  const { data } = config;
  const train = trainSource(data);
  const sourceOf = { train, eval: dataSource(data, 'eval') ?? train, calibration: dataSource(data, 'calibration') ?? train };
  // One file at a time (a data folder may hold more files than the open-file limit), each once.
  const hashes = new Map<string, string>();
  const changes: string[] = [];
  for (const kind of ['train', 'eval', 'calibration'] as const) {
    const before = known[kind];
    if (before === null) continue; // which sets exist follows from the config, whose hash is checked
    const source = sourceOf[kind];
    const files = source.inputIds !== undefined ? [source.inputIds] : source.builtin !== undefined ? builtinCorpus(source.builtin) : await expandDataPaths(source.data!);
    const now: { file: string; sha256: string }[] = [];
    for (const file of files) {
      let sha = hashes.get(file);
      if (sha === undefined) {
        // checkDataPaths refused these already; a file swapped for a pipe since would block here.
        const problem = await runDataFileProblem(file);
        if (problem !== undefined) throw new InputError(`data.${kind}: ${problem}`, 'NOT_A_FILE');
        hashes.set(file, (sha = await sha256File(file)));
      }
      now.push({ file, sha256: sha });
    }
    changes.push(...fileChanges(recordFiles(before), now.map(({ file, sha256 }) => ({ file: installIndependentName(file), sha256 }))).map((c) => `${kind}: ${c}`));
  }
  return changes;
}

/** A data record's files, bundled corpora named independently of where apex is installed. */
function recordFiles(r: DataSpecRecord): { file: string; sha256: string }[] {
  return r.paths.map((file, i) => ({ file: installIndependentName(file), sha256: r.sha256[i] ?? '' }));
}

/**
 * A resumed run whose inputs changed would put results of the old inputs next to results of the
 * new ones (and record only the new): refused, naming what changed.
 */
function refuseChangedInputs(run: string, what: string, changes: readonly string[]): void {
  if (changes.length === 0) return;
  throw new UsageError(
    `${what} of ${run} changed since the run began: ${changes.slice(0, 5).join('; ')}${changes.length > 5 ? `; and ${changes.length - 5} more` : ''}. ` +
      'Its results so far come from the earlier inputs; restore them to continue, or pass --force to start the run over',
    'RUN_INPUT_CHANGED',
  );
}

export async function runPipeline(options: RunPipelineOptions): Promise<RunSummary> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const { config } = options.resolved;
  const log = options.log ?? (() => {});
  const status = options.status ?? (() => {});
  // Each warning once: the training, held-out and calibration sets of one source warn alike.
  const warned = new Set<string>();
  const onWarning = (m: string) => { if (!warned.has(m)) { warned.add(m); (options.onWarning ?? log)(m); } };
  const signal = options.signal;
  const run = resolve(config.output);
  // Everything that can be checked without writing is checked before the run folder exists.
  const { base, tokenizer, backend } = await checkBeforeWriting(config, signal, status);
  const existed = existsSync(run);
  await refuseLockNameTooLong(run); // before the parent folders are made
  await makeOutputFolder(dirname(run));

  const lock = new RunLock(run, onWarning);
  await lock.take();
  try {
    if (options.force) refuseInputsInsideRun(run, base.dir, config);
    const state = await RunState.open(run, config, { force: options.force ?? false, apexVersion: apexVersion() });
    log(`${state.start === 'resumed' ? 'resuming' : state.start === 'restarted' ? 'starting over (--force)' : 'starting'} run ${run} (config ${state.configHash.slice(0, 16)})`);

    for (const c of state.neutralChanges) {
      onWarning(`${c.key} is ${JSON.stringify(c.now)} now, ${JSON.stringify(c.then)} when ${run} last ran: ${c.why}; the run continues with the new value, which run.json now records`);
    }
    log(`backend: ${backend.name} (${backend.detail})`);
    if (state.start === 'resumed' && state.apexVersion !== apexVersion()) {
      onWarning(`${run} was begun by apex ${state.apexVersion}; apex ${apexVersion()} continues it, so its steps so far and from here on come from two versions (summary.json: apexVersion and begunByApexVersion)`);
    }
    const modelRecord = await checkRecordedInputs(run, config, base, { model: state.completed<BaseModelRecord>('model')?.result, data: state.completed<DataRecords>('data')?.result }, signal, status);
    await state.complete('model', 0, modelRecord);
    // The base model must stay as hashed while the run uses it (the baseline and every stage 1
    // read it; a file rewritten in place would give results of two models under one record).
    const modelStats = await fileStats(base.dir, modelRecord.files);
    const refuseModelChangedSince = async () => {
      if (JSON.stringify(await fileStats(base.dir, modelRecord.files)) === JSON.stringify(modelStats)) return;
      const now = await baseModelRecord(base, { ...(signal ? { signal } : {}), progress: status });
      const changes = modelFileChanges(modelRecord.files, now.files);
      if (changes.length > 0) {
        throw new UsageError(
          `the base model of ${run} changed while the run was running: ${changes.slice(0, 5).join('; ')}. The results so far mix the two; restore it and run again, or pass --force to start the run over`,
          'RUN_INPUT_CHANGED',
        );
      }
    };
    log(`model: ${base.dir} (${base.spec.numLayers} layers, ${base.parameters.toLocaleString('en-US')} parameters)`);

    let loaded: Promise<RunData> | undefined;
    const data = (): Promise<RunData> => (loaded ??= (async () => {
      status('loading data');
      const d = await loadRunData(config, tokenizer, onWarning, signal, status);
      const calibration = d.calibration ? `, ${d.calibration.sequences.length} calibration` : '';
      // Token ids narrower than data.seq_len give shorter sequences (as --input-ids): say what was read.
      const sets = [['training', d.train], ['held-out', d.eval], ...(d.calibration ? [['calibration', d.calibration] as const] : [])] as const;
      const same = sets.every(([, set]) => set.seqLen === d.train.seqLen);
      const lengths = same ? `${d.train.seqLen} tokens each` : `${sets.map(([name, set]) => `${name} ${set.seqLen}`).join(', ')} tokens each`;
      log(`data: ${d.train.sequences.length} training sequences, ${d.eval.sequences.length} held-out${calibration} (${lengths})`);
      const records = dataRecords(d);
      refuseChangedData(run, state.completed<DataRecords>('data')?.result, records);
      await state.complete('data', 0, records);
      return d;
    })());

    const ctx: RunContext = {
      config,
      state,
      run,
      modelDir: base.dir,
      modelSource: base.resolved,
      data,
      ...(signal ? { signal } : {}),
      log,
      status,
      onWarning,
      argv: options.argv ?? [],
    };
    const skipped: string[] = [];
    const before = await measureBaseModel(ctx);
    if (before.skipped) skipped.push('eval/before');
    log(`before training: held-out perplexity ${before.value.perplexity.toFixed(3)}`);

    let analysis: RunSummaryParts['analysis'] = null;
    if (config.method === 'apex') {
      const assessed = await assessAdvantage(ctx);
      if (assessed.skipped) {
        skipped.push('analysis');
        log(`analysis: complete, skipped (${ANALYSIS_FOLDER})`);
      }
      analysis = { path: ANALYSIS_FOLDER, report: `${ANALYSIS_FOLDER}/${ANALYSIS_FILES.report}`, seconds: assessed.seconds };
    }

    const main = await trainLine(ctx, { key: 'run', name: config.method === 'apex' ? 'APEX' : config.method, method: config.method, folder: run });
    skipped.push(...main.skipped);
    let baseline: RunSummaryParts['baseline'] = null;
    if (config.baseline.vanilla) {
      await refuseModelChangedSince();
      const folder = join(run, BASELINE_FOLDER);
      await makeOutputFolder(dirname(folder)); // the trainer locks <folder>.lock next to it
      const outcome = await trainLine(ctx, { key: BASELINE_FOLDER, name: 'vanilla', method: 'vanilla', folder });
      skipped.push(...outcome.skipped);
      baseline = { method: 'vanilla', path: BASELINE_FOLDER, stages: outcome.stages };
    }

    if (state.completed('data') === undefined) await data();
    await refuseModelChangedSince();
    const summary = assembleRunSummary({
      config,
      apexVersion: apexVersion(),
      begunByApexVersion: state.apexVersion,
      run,
      backend: { name: backend.name, detail: backend.detail },
      baseModel: modelRecord,
      data: state.completed<DataRecords>('data')!.result,
      before,
      analysis,
      stages: main.stages,
      baseline,
      start: state.start,
      skipped,
      startedAt,
      invocationSeconds: (performance.now() - started) / 1000,
    });
    await writeRunSummary(run, summary);
    await writeTextAtomic(join(run, RUN_REPORT_FILE), renderRunReport(await collectRunReportInputs(summary, base.spec)));
    log(`summary written to ${join(run, 'summary.json')} and ${join(run, RUN_REPORT_FILE)}`);
    return summary;
  } catch (e) {
    // A run folder this invocation created and that holds nothing to resume from goes.
    if (!existed && (await removeUnresumableRunFolder(run).catch(() => false))) onWarning(`removed ${run}: this failed run had created it and left nothing to resume from`);
    throw e;
  } finally {
    await lock.release();
  }
}

/** The model and every data path of the config: what `--force` must not delete with the run folder. */
export function refuseInputsInsideRun(run: string, modelDir: string, config: ResolvedRunConfig['config']): void {
  const sources = (key: string, list: readonly string[] | null) => (list ?? []).filter((p) => !p.startsWith(BUILTIN_PREFIX)).map((p) => ({ label: `data.${key}`, path: p }));
  refuseInputsInsideOutput(run, [
    { label: 'the model', path: modelDir },
    ...sources('train', config.data.train),
    ...sources('eval', config.data.eval),
    ...sources('calibration', config.data.calibration),
    ...(['train', 'eval', 'calibration'] as const).flatMap((set) => {
      const ids = config.data[`${set}_input_ids`];
      return ids !== null ? [{ label: `data.${set}_input_ids`, path: ids }] : [];
    }),
    ...(config.lora?.match_params ? [{ label: 'lora.match_params', path: config.lora.match_params }] : []),
  ]);
}

/**
 * A resumed run's inputs against its record: the base model hashed again (its record returned)
 * and the data files' hashes, refused (RUN_INPUT_CHANGED) where they changed since the run began.
 */
export async function checkRecordedInputs(
  run: string,
  config: ResolvedRunConfig['config'],
  base: Awaited<ReturnType<typeof resolveBaseModel>>,
  known: { readonly model: BaseModelRecord | undefined; readonly data: DataRecords | undefined },
  signal: AbortSignal | undefined,
  status: (message: string) => void,
): Promise<BaseModelRecord> {
  const modelRecord = await baseModelRecord(base, { ...(signal ? { signal } : {}), progress: status });
  if (known.model !== undefined) refuseChangedInputs(run, 'the base model', modelFileChanges(known.model.files, modelRecord.files));
  if (known.data !== undefined) refuseChangedInputs(run, 'the data', await dataFileChanges(config, known.data));
  return modelRecord;
}

export function dataRecords(d: RunData): DataRecords {
  return { train: d.train.source, eval: d.eval.source, calibration: d.calibration?.source ?? null };
}

/** The loaded data's records against the run's (tokens and documents too, not only the files). */
export function refuseChangedData(run: string, known: DataRecords | undefined, records: DataRecords): void {
  if (known === undefined) return;
  refuseChangedInputs(run, 'the data', (['train', 'eval', 'calibration'] as const).flatMap((k) => dataChanges(k, known[k], records[k])));
}

/**
 * The checks that need no writing, made before the run folder exists (and all a dry run makes
 * besides planning): the data paths, the base model and its tokenizer, the LoRA options against
 * the model, the backend, and a memory budget no stage can meet. A dry run passes `weights:
 * 'headers'`: a Hub model's weight files not in the cache are described by their headers, not
 * downloaded.
 */
export async function checkBeforeWriting(
  config: ResolvedRunConfig['config'],
  signal: AbortSignal | undefined,
  status: (message: string) => void,
  weights: 'download' | 'headers' = 'download',
): Promise<{ base: Awaited<ReturnType<typeof resolveBaseModel>>; tokenizer: Awaited<ReturnType<typeof loadTokenizer>>; backend: Awaited<ReturnType<typeof selectBackend>> }> {
  await checkDataPaths(config);
  const base = await resolveBaseModel(config.model, { ...(signal ? { signal } : {}), progress: status, weights });
  const tokenizer = await loadTokenizer(base.dir);
  checkRunTokenizer(tokenizer, base.dir, config);
  // lora.match_params is read when the baseline trains, after the base evaluation: checked now.
  if (config.lora?.match_params) await matchedLoraRank(resolve(config.lora.match_params), 1, base.spec, 'lora.match_params');
  if (config.lora?.rank != null && config.lora.rank > maxLoraRank(base.spec)) {
    throw new UsageError(`lora.rank must be an integer in [1, ${maxLoraRank(base.spec)}] for this model (the smallest side of its projections), got ${config.lora.rank}`, 'CONFIG_INVALID');
  }
  const backend = await selectBackend(config.backend as BackendRequest);
  if (config.max_memory !== null) refuseImpossibleBudget(config, base.spec, config.max_memory);
  return { base, tokenizer, backend };
}

/**
 * Refuses (exit 5) before the run folder exists when even the part of a training stage's
 * memory that does not depend on the selection is over `max_memory`: weights and activations
 * (at optimizer.batch_size, which the held-out evaluations between steps do not exceed:
 * run-stage-settings.ts), plus, where every weight is trained whatever the selection (`vanilla`, APEX `full`), their
 * gradients and optimizer state, and what the command itself holds (and, for those, what a
 * checkpoint holds while written). Each stage checks its complete estimate again when it starts.
 */
function refuseImpossibleBudget(config: ResolvedRunConfig['config'], spec: ModelSpec, budgetBytes: number): void {
  const everyWeight = config.method === 'vanilla' || (config.method === 'apex' && config.setting === 'full');
  const sizes = everyWeight ? [...expectedTensors(spec).values()].map((shape) => shape.reduce((a, b) => a * b, 1)) : [];
  const floor = estimateTrainingMemory(spec, {
    batch: config.optimizer.batch_size,
    seqLen: config.data.seq_len,
    trainableEntries: sizes.reduce((a, b) => a + b, 0),
    largestTrainable: Math.max(0, ...sizes),
    operators: false,
    lora: false,
    recompute: config.optimizer.recompute_activations,
  });
  checkTrainingMemory(floor, budgetBytes, `training (batch ${config.optimizer.batch_size} × ${config.data.seq_len} tokens, before any selection)`, CONFIG_MEMORY_ADVICE, { method: config.method, setting: config.method === 'apex' ? config.setting : null });
}
