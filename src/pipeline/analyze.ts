/**
 * `runAnalysis`: the measuring half of APEX (APEX-METHOD §2, §6, §7). One streaming forward
 * pass over the calibration sequences records, per layer and micro-batch, the head and FFN
 * channel activation norms; they become Top-k / Min-k rank counts, averaged norms and spread
 * diagnostics; the selection (P/N per layer) follows. Writes the `analysis/` folder
 * atomically under the output lock:
 *
 *   analysis.json        schema apex.analysis/1 (analysis-json.ts)
 *   stats.safetensors    score tensors of §7 + averaged norms (ops/score-file.ts), the input of stage 1
 *   index.html + *.svg   the report (analysis-report.ts)
 *
 * and with `dumpStats` a file with the per-sequence sums of squares [L, B, H] / [L, B, I] in
 * the layout of the reference outputs. Padding never enters the statistics: each sequence is
 * cut to its real length before the forward pass (causal attention makes that exact).
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError, VerificationError } from '../errors.js';
import { refuseInputsInsideOutput } from '../io/output-inputs.js';
import { outputState, writeAtomicFolder } from '../io/atomic-output.js';
import { Checkpoint } from '../io/checkpoint.js';
import { f32Tensor, writeSafetensors } from '../io/safetensors-writer.js';
import { ioError } from '../io/io-error.js';
import { selectBackend, type BackendRequest } from '../model/backend.js';
import type { ModelSpec } from '../model/model-spec.js';
import { checkTokens, contextWarning, DEFAULT_MAX_MEMORY_BYTES, evaluateNll } from '../model/streaming-forward.js';
import { CheckpointWeightSource, describeCheckpoint } from '../model/weight-source.js';
import { countingKMetadata, readScoreFile, writeScoreFile, type LayerScoreRecord } from '../ops/score-file.js';
import type { LayerSelection, ScoreMode } from '../ops/selection.js';
import { formatDuration } from '../report/number-format.js';
import { dataSourceName, realTokens, type DataSpecRecord, type SequenceSet } from '../train/data.js';
import { chunkSumsq, LayerStatsCollector, type SequenceStatsDump } from './activation-stats.js';
import { checkBaseCompatible, effectiveRanks, erankWorkFraction, type ErankResult } from './analysis-erank.js';
import { ANALYSIS_FILES, ANALYSIS_SCHEMA, analysisFiles, layerAnalyses, type AnalysisJson } from './analysis-json.js';
import { checkMemoryLimit, describeMemoryEstimate, planAnalysisMemory, type AnalysisMemoryEstimate, type AnalysisMemoryNames } from './analysis-memory.js';
import { apexVersion, modelRecord } from './analysis-provenance.js';
import { renderAnalysisReport, renderAnalysisSummary } from './analysis-report.js';
import { analysisRecorder, checkSelectionSettings, DEFAULT_SELECTION, selectFromRecorder, type SelectionSettings } from './analysis-selection.js';
import { checkOutputFile, makeOutputFileFolder } from '../io/output-file.js';

export interface AnalysisOptions {
  /** Resolved local model folder. */
  model: string;
  /** The analysis folder to write. */
  output: string;
  data: SequenceSet;
  /** Sequences per micro-batch (the unit of rank counting). */
  batchSize: number;
  ratio: number;
  seed: number;
  backend?: string;
  signal?: AbortSignal;
  progress?: (message: string) => void;
  /** Lines to keep on screen (memory estimate, backend, where the output went); default: progress. */
  log?: (message: string) => void;
  /** Warnings (checkpoint oddities, stale locks cleaned up). */
  onWarning?: (message: string) => void;
  score?: ScoreMode;
  decayK?: boolean;
  stage?: number;
  randomSelection?: boolean;
  reverse?: boolean;
  /** Effective rank of every projection matrix. */
  erank?: boolean;
  /** Resolved local folder of a base model: adds the effective rank of ΔW (needs erank). */
  base?: string;
  /** Writes per-sequence statistics (head_sumsq, gate_act_sumsq) to this safetensors file. */
  dumpStats?: string;
  /** Refuse to start when the memory estimate exceeds this many bytes. */
  maxMemory?: number;
  /** How that refusal names the settings (default: apex analyze's flags). */
  memoryNames?: AnalysisMemoryNames;
  /** Replace an existing analysis folder. */
  force?: boolean;
}

export interface AnalysisResult {
  /** Absolute path of the analysis folder. */
  output: string;
  analysis: AnalysisJson;
  /** What stats.safetensors holds, per layer. */
  scores: LayerScoreRecord[];
  selections: LayerSelection[];
  /** The per-layer summary table (plain text). */
  summary: string;
  memory: AnalysisMemoryEstimate;
  /** Absolute path of the --dump-stats file, when written. */
  dumpStats?: string;
  warnings: string[];
}

export async function runAnalysis(options: AnalysisOptions): Promise<AnalysisResult> {
  const started = performance.now();
  const progress = options.progress ?? (() => {});
  const log = options.log ?? progress;
  const warnings: string[] = [];
  const warn = (m: string) => { warnings.push(m); options.onWarning?.(m); };
  const settings = analysisSettings(options);
  const output = resolve(options.output);

  const dumpPath = options.dumpStats === undefined ? undefined : checkOutputFile(options.dumpStats, { flag: '--dump-stats', protectedFolders: [{ label: 'the model folder', path: options.model }, { label: 'the output folder', path: output }], force: options.force ?? false });
  const checkpoint = await Checkpoint.open(resolve(options.model));
  let baseCheckpoint: Checkpoint | undefined;
  try {
    const described = describeCheckpoint(checkpoint);
    const spec = described.spec;
    described.warnings.forEach(warn);
    const sequences = unpadded(options.data);
    checkTokens(spec, sequences, dataSourceName(options.data.source));
    const seqLen = Math.max(...sequences.map((s) => s.length));
    const beyondContext = contextWarning(spec, seqLen, 'calibration sequences');
    if (beyondContext) warn(`${beyondContext}; statistics of those positions describe inputs the model was not trained on`);
    const budgetBytes = options.maxMemory ?? DEFAULT_MAX_MEMORY_BYTES;
    // The backend first: on wasm the forward's chunks must also fit its heap.
    const backend = await selectBackend((options.backend ?? 'auto') as BackendRequest);
    const memory = planAnalysisMemory(spec, sequences, {
      batchSize: options.batchSize, ...(options.maxMemory !== undefined ? { maxMemory: options.maxMemory } : {}), backend: backend.name,
      dumpStats: options.dumpStats !== undefined, erank: options.erank ?? false, base: options.base !== undefined,
      ...(options.memoryNames ? { names: options.memoryNames } : {}),
    });
    log(describeMemoryEstimate(memory));
    checkMemoryLimit(memory, options.maxMemory, options.memoryNames);
    let base: { checkpoint: Checkpoint; spec: ModelSpec } | undefined;
    if (options.base !== undefined) {
      baseCheckpoint = await Checkpoint.open(resolve(options.base));
      base = { checkpoint: baseCheckpoint, spec: describeCheckpoint(baseCheckpoint).spec };
      checkBaseCompatible(spec, base.spec, options.base);
    }
    refuseInputsInsideOutput(output, [
      { label: 'the model', path: checkpoint.dir },
      ...(options.base !== undefined ? [{ label: 'the --base model', path: options.base }] : []),
      ...options.data.source.paths.map((p) => ({ label: 'the data', path: p })),
    ], '-o/--output');
    if ((await outputState(output)) === 'present' && !options.force) {
      throw new UsageError(`output ${output} already exists and is not empty; choose another folder or pass --force to replace it`, 'OUTPUT_EXISTS');
    }
    log(`backend: ${backend.name} (${backend.detail})`);

    const built = await writeAtomicFolder(output, { force: options.force ?? false, command: 'apex analyze', onWarning: warn }, async (tmp) => {
      const source = new CheckpointWeightSource(checkpoint, spec);
      const recorder = analysisRecorder(spec, settings);
      const collector = new LayerStatsCollector(spec, sequences.length, options.batchSize, { keepPerSequence: options.dumpStats !== undefined });
      const forwardStarted = performance.now();
      const nll = await evaluateNll(source, sequences, {
        batchSize: options.batchSize,
        maxMemoryBytes: budgetBytes,
        ...(options.data.lossMasks ? { lossMasks: options.data.lossMasks.map((m, i) => m.subarray(0, sequences[i]!.length)) } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        observe: (a) => chunkSumsq(a, spec, (sums) => {
          if (collector.currentLayer >= 0 && a.layer !== collector.currentLayer) collector.finishLayer(recorder);
          collector.addChunk(a.layer, a.sequenceIndices, sums);
        }),
        onProgress: (e) => progress(forwardProgress(e, forwardStarted)),
      });
      collector.finishLayer(recorder);
      const forwardSeconds = (performance.now() - forwardStarted) / 1000;

      const { records, selections } = selectFromRecorder(recorder, settings);
      let erank: ErankResult | undefined;
      if (options.erank) {
        const erankStarted = performance.now();
        erank = await effectiveRanks(checkpoint, spec, {
          ...(base ? { base } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
          onMatrix: (done, total, label) => {
            const fraction = erankWorkFraction(spec, done);
            const elapsed = (performance.now() - erankStarted) / 1000;
            progress(`effective rank ${done}/${total} (${label}) · ${formatDuration(elapsed)} elapsed · ETA ${formatDuration((elapsed / fraction) * (1 - fraction))}`);
          },
        });
      }
      progress('fingerprinting the model files');
      const model = await modelRecord(checkpoint, spec, options.signal);
      const analysis: AnalysisJson = {
        schema: ANALYSIS_SCHEMA,
        tool: { name: 'apex', version: apexVersion() },
        createdAt: new Date().toISOString(),
        model,
        data: options.data.source,
        seed: options.seed,
        backend,
        settings: { ...settings, batchSize: options.batchSize },
        sequences: sequences.length,
        tokens: sequences.reduce((n, s) => n + s.length, 0),
        microBatches: collector.microBatches,
        calibration: { meanNll: nll.meanNll, perplexity: nll.perplexity, targets: nll.tokens },
        memory: { estimateBytes: memory.totalBytes, budgetBytes, chunkSequences: memory.forward.chunkSequences },
        layers: layerAnalyses(spec, recorder, selections),
        ...(erank ? { erank } : {}),
        files: analysisFiles(erank !== undefined),
        timing: { forwardSeconds, ...(erank ? { erankSeconds: erank.seconds } : {}), totalSeconds: (performance.now() - started) / 1000 },
      };
      await writeScoreFile(join(tmp, ANALYSIS_FILES.stats), records, collector.microBatches, { ...scoreMetadata(analysis, options.data.source), ...countingKMetadata(recorder.shape) });
      // A full disk names the file (exit 5) instead of a bare ENOSPC.
      const writeText = (name: string, content: string) => writeFile(join(tmp, name), content).catch((e: unknown) => { throw ioError(join(tmp, name), 'write', e); });
      await writeText(ANALYSIS_FILES.json, formatAnalysisJson(analysis));
      const report = renderAnalysisReport({ analysis, channelNormAvg: records.map((r) => r.channelNormAvg!) });
      for (const [name, content] of report) await writeText(name, content);
      // Before the folder is renamed into place: a dump that cannot be written leaves no analysis
      // behind that a rerun would have to --force away.
      if (dumpPath !== undefined) {
        await makeOutputFileFolder(dumpPath);
        await writeDump(dumpPath, spec, sequences.length, collector.dump!);
      }
      return { analysis, records, selections };
    }, async (tmp, b) => verifyOutput(tmp, spec, b.analysis));

    const dumpStats = dumpPath;
    log(`analysis written to ${output}`);
    return {
      output,
      analysis: built.analysis,
      scores: built.records,
      selections: built.selections,
      summary: renderAnalysisSummary(built.analysis),
      memory,
      ...(dumpStats ? { dumpStats } : {}),
      warnings,
    };
  } finally {
    await checkpoint.close();
    await baseCheckpoint?.close();
  }
}

/** The selection settings of the options, after checking every option a user can get wrong (UsageError). */
export function analysisSettings(o: Omit<AnalysisOptions, 'model' | 'output' | 'data'>): SelectionSettings {
  if (!Number.isSafeInteger(o.batchSize) || o.batchSize < 1) throw new UsageError(`--batch-size must be a positive integer, got ${o.batchSize}`);
  if (o.base !== undefined && !o.erank) throw new UsageError('--base only adds the effective rank of ΔW: pass it together with --erank');
  if (o.maxMemory !== undefined && !(Number.isSafeInteger(o.maxMemory) && o.maxMemory > 0)) throw new UsageError(`--max-memory must be a positive number of bytes, got ${o.maxMemory}`);
  const settings: SelectionSettings = {
    ratio: o.ratio,
    score: o.score ?? DEFAULT_SELECTION.score,
    stage: o.stage ?? DEFAULT_SELECTION.stage,
    decayK: o.decayK ?? DEFAULT_SELECTION.decayK,
    randomSelection: o.randomSelection ?? DEFAULT_SELECTION.randomSelection,
    reverse: o.reverse ?? DEFAULT_SELECTION.reverse,
    seed: o.seed,
  };
  checkSelectionSettings(settings);
  return settings;
}

/**
 * Each sequence cut to its real tokens. Packed text and input ids have no padding. Chat
 * sequences are padded after the conversation: cut at its length (`SequenceSet.lengths`), or,
 * for a chat set made without lengths, after its last loss target.
 */
export function unpadded(data: SequenceSet): Int32Array[] {
  if (!data.lengths && !data.lossMasks) return data.sequences;
  return data.sequences.map((seq, i) => seq.subarray(0, realTokens(data, i)));
}

function forwardProgress(e: { stage: 'layer' | 'lm_head'; done: number; total: number }, started: number): string {
  const elapsed = (performance.now() - started) / 1000;
  if (e.stage === 'lm_head') return `lm_head block ${e.done}/${e.total} (calibration loss) · ${formatDuration(elapsed)} elapsed`;
  return `layer ${e.done}/${e.total} · ${formatDuration(elapsed)} elapsed · ETA ${formatDuration((elapsed / e.done) * (e.total - e.done))}`;
}

/** The model's identity as the analysis records it in stats.safetensors: `file:sha256` of its fingerprinted files. */
export function modelFingerprint(model: { readonly files: readonly { readonly file: string; readonly sha256: string }[] }): string {
  return model.files.map((f) => `${f.file}:${f.sha256}`).join(',');
}

function scoreMetadata(a: AnalysisJson, data: DataSpecRecord): Record<string, string> {
  return {
    source: 'apex analyze',
    analysis_schema: a.schema,
    apex_version: a.tool.version,
    ratio: String(a.settings.ratio),
    batch_size: String(a.settings.batchSize),
    seed: String(a.seed),
    data_kind: data.kind,
    model_fingerprint: modelFingerprint(a.model),
  };
}

/** Pretty JSON with every array of numbers kept on one line (thousands of channel scores stay readable). */
export function formatAnalysisJson(value: unknown): string {
  const number = '-?\\d+(?:\\.\\d+)?(?:[eE][-+]?\\d+)?';
  const array = new RegExp(`\\[\\n\\s+(${number}(?:,\\n\\s+${number})*)\\n\\s*\\]`, 'g');
  return `${JSON.stringify(value, null, 2).replace(array, (_, body: string) => `[${body.replace(/,\n\s+/g, ', ')}]`)}\n`;
}

async function verifyOutput(dir: string, spec: ModelSpec, analysis: AnalysisJson): Promise<void> {
  const scores = await readScoreFile(join(dir, ANALYSIS_FILES.stats), spec);
  if (scores.microBatches !== analysis.microBatches) throw new VerificationError(`${ANALYSIS_FILES.stats} records ${scores.microBatches} micro-batches, expected ${analysis.microBatches}`);
  scores.layers.forEach((r, layer) => {
    const expected = analysis.layers[layer]!.heads.score;
    if (r.headScore.some((v, u) => v !== expected[u])) throw new VerificationError(`${ANALYSIS_FILES.stats}: layer ${layer} head scores differ from analysis.json`);
  });
}

async function writeDump(path: string, spec: ModelSpec, sequences: number, dump: SequenceStatsDump): Promise<void> {
  const L = spec.numLayers;
  await writeSafetensors(path, [
    f32Tensor('head_sumsq', [L, sequences, spec.numHeads], dump.headSumsq),
    f32Tensor('gate_act_sumsq', [L, sequences, spec.intermediateSize], dump.gateSumsq),
  ], { format: 'pt', source: 'apex analyze --dump-stats' });
}
