/**
 * `apex expand`: fuses a stage's APEX operators (and its directly trained tensors) into a new,
 * complete Hugging Face checkpoint (APEX-METHOD §3, §5, §7).
 *
 *   1. resolve paths (direct flags or a run folder + stage), open the model, read and validate
 *      the operator and update files, plan what changes (expand-plan.ts), check --max-memory;
 *   2. hash the input shards (sha256 per file; per tensor for the tensors to be copied);
 *   3. write through the checkpoint writer into a temporary sibling folder under the output
 *      lock: copied tensors stream byte for byte, changed ones are computed one at a time
 *      (expand-tensor.ts: update → fusion in float32 → one rounding) and checked for NaN/Inf;
 *      config, tokenizer and generation files are copied (config.json's dtype rewritten only
 *      when --out-dtype changes it), plus README.md;
 *   4. verify (expand-verify.ts), write apex_run.json, rename into place.
 * Failures leave no output: a refused memory limit (exit 5) or a dry run before anything is
 * written, a full disk (5), NaN/Inf or a failed check (6) and Ctrl-C (130) by discarding the
 * temporary folder.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { InputError, InternalError, ResourceLimitError, UsageError, VerificationError } from '../errors.js';
import { refuseInputsInsideOutput } from '../io/output-inputs.js';
import { outputState } from '../io/atomic-output.js';
import { formatBytes, parseByteSize } from '../io/byte-size.js';
import { weightsToDownload, type WeightsToDownload } from '../io/hub-headers.js';
import { Checkpoint, INDEX_FILE } from '../io/checkpoint.js';
import { listModelFiles } from '../io/model-files.js';
import { copiedTensor, writeCheckpoint, type OutputTensor } from '../io/checkpoint-writer.js';
import { resolveModel, type ResolvedModel } from '../io/resolve-model.js';
import type { WriteOptions } from '../io/safetensors-writer.js';
import type { ModelSpec } from '../model/model-spec.js';
import { describeCheckpoint } from '../model/weight-source.js';
import { ApexFileFormatError } from '../ops/apex-tensor-file.js';
import { readOperatorFile, type OperatorFile, type OperatorFileMeta } from '../ops/operator-file.js';
import { redact } from '../util/secrets.js';
import { apexVersion, sha256OfFile } from './analysis-provenance.js';
import { resolveExpandPaths, readJson, stageDir, type ExpandPathOptions, type ExpandPaths } from './expand-paths.js';
import { OUT_DTYPES, planExpansion, type ExpandMemoryEstimate, type ExpandPlan, type LayerPlan, type OutDtype } from './expand-plan.js';
import { produceTensor, TensorScratch } from './expand-tensor.js';
import { TrainedUpdates } from './expand-updates.js';
import { digestShard, verifyExpandedCheckpoint, type ShardDigest } from './expand-verify.js';
import { renderModelCard } from './model-card.js';
import { PROVENANCE_FILE, ProvenanceRecorder, peakRssBytes, provenanceString, writeProvenance, type FileRecord } from './provenance.js';
import { fileChanges } from '../util/file-changes.js';

/** Where to read and write (either `run` + `stage`, or `model` + `operators`/`updates` + `output`), and how. */
export interface ExpandOptions extends ExpandPathOptions {
  outDtype?: OutDtype;
  maxShardSize?: string;
  force?: boolean;
  dryRun?: boolean;
  argv?: string[];
  progress?: (m: string) => void;
  signal?: AbortSignal;
  /** Refuse (exit 5) when the memory estimate exceeds this size, e.g. `8GiB`. */
  maxMemory?: string;
  /** Fault injection for tests (see WriteOptions.beforeWrite). */
  beforeWrite?: WriteOptions['beforeWrite'];
}

export interface ExpandResult {
  readonly dryRun: boolean;
  /** The output folder (written, or that would be written). */
  readonly output: string;
  readonly run?: string;
  readonly stage?: number;
  /** download: of a Hub model, what a real expand would download (a dry run read the headers only); null when local or cached. */
  readonly model: { readonly argument: string; readonly dir: string; readonly source: ResolvedModel['source']; readonly download: WeightsToDownload | null };
  readonly baseModel?: string;
  readonly operators?: { readonly path: string; readonly meta: OperatorFileMeta; readonly layers: number };
  readonly updates?: { readonly path: string; readonly tensors: number };
  /** --out-dtype, or null when every tensor keeps its stored dtype. */
  readonly outDtype: OutDtype | null;
  readonly layout: 'keep' | 'plan';
  readonly tensors: { readonly total: number; readonly changed: number; readonly copied: number };
  readonly layers: readonly LayerPlan[];
  readonly globals: ExpandPlan['globals'];
  readonly memory: ExpandMemoryEstimate & { readonly limitBytes: number | null; readonly peakRssBytes: number };
  /** Output shards with their sha256 (empty for a dry run). */
  readonly shards: readonly FileRecord[];
  readonly seconds: Readonly<Record<string, number>>;
  readonly warnings: readonly string[];
}

interface Inputs {
  readonly paths: ExpandPaths;
  readonly resolved: ResolvedModel;
  readonly input: Checkpoint;
  readonly spec: ModelSpec;
  readonly operators?: OperatorFile;
  readonly updates?: TrainedUpdates;
  readonly plan: ExpandPlan;
  readonly baseModel: string;
  readonly warnings: string[];
}

export async function runExpand(options: ExpandOptions): Promise<ExpandResult> {
  const prov = new ProvenanceRecorder('expand', options.argv ?? []);
  if (options.outDtype !== undefined && !(OUT_DTYPES as readonly string[]).includes(options.outDtype)) {
    throw new UsageError(`--out-dtype must be one of ${OUT_DTYPES.join(', ')}, got '${String(options.outDtype)}'`, 'BAD_FLAG');
  }
  const maxShardBytes = options.maxShardSize !== undefined ? parseByteSize(options.maxShardSize, '--max-shard-size') : undefined;
  const maxMemoryBytes = options.maxMemory !== undefined ? parseByteSize(options.maxMemory, '--max-memory') : undefined;
  const paths = await resolveExpandPaths(options);
  const say = options.progress ?? (() => {});

  const inputs = await prov.time('open', () => openInputs(paths, options));
  const { input, plan, warnings } = inputs;
  try {
    if (maxMemoryBytes !== undefined && plan.memory.totalBytes > maxMemoryBytes) {
      throw new ResourceLimitError(
        `expand needs about ${formatBytes(plan.memory.totalBytes)} (largest computed tensor ${plan.memory.largestTensor ?? 'none'}: ${formatBytes(plan.memory.tensorBytes)}, ` +
          `runtime and buffers ${formatBytes(plan.memory.runtimeBytes + plan.memory.ioBytes + plan.memory.operatorBytes)}), more than --max-memory ${formatBytes(maxMemoryBytes)}; nothing was written`,
        'MEMORY_LIMIT',
      );
    }
    const output = resolve(paths.output);
    const result = (shards: readonly FileRecord[], dryRun: boolean): ExpandResult => ({
      dryRun,
      output,
      ...(paths.run !== undefined ? { run: paths.run, stage: paths.stage! } : inputs.operators ? { stage: inputs.operators.meta.stage } : {}),
      model: { argument: paths.model, dir: input.dir, source: inputs.resolved.source, download: weightsToDownload(inputs.resolved.remoteWeights) },
      baseModel: inputs.baseModel,
      ...(inputs.operators ? { operators: { path: paths.operators!, meta: inputs.operators.meta, layers: inputs.operators.layers.length } } : {}),
      ...(inputs.updates ? { updates: { path: paths.updates!, tensors: inputs.updates.names().length } } : {}),
      outDtype: options.outDtype ?? null,
      layout: maxShardBytes !== undefined ? 'plan' : 'keep',
      tensors: { total: plan.tensors.length, changed: plan.changed, copied: plan.copied },
      layers: plan.layers,
      globals: plan.globals,
      memory: { ...plan.memory, limitBytes: maxMemoryBytes ?? null, peakRssBytes: peakRssBytes() },
      shards,
      seconds: prov.timingsSoFar(),
      warnings,
    });
    // Before the dry run returns: it answers as the real expand would (exit 2 here), as the
    // dry runs of finetune and run check what their output folder holds.
    if ((await outputState(output)) === 'present' && !options.force) {
      throw new UsageError(`output ${output} already exists and is not empty; it was left alone (pass --force to replace it)`, 'OUTPUT_EXISTS');
    }
    if (options.dryRun) return result([], true);
    const shards = await writeExpanded(inputs, output, maxShardBytes, options, prov, say);
    return result(shards, false);
  } finally {
    await inputs.updates?.close();
    await input.close();
  }
}

async function openInputs(paths: ExpandPaths, options: ExpandOptions): Promise<Inputs> {
  // A dry run plans from the tensors' names, dtypes and shapes: of a Hub model's weight files
  // not in the cache only the safetensors headers are read (resolve-model.ts, weights: 'headers').
  const resolved = await resolveModel(paths.model, {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.progress ? { progress: options.progress } : {}),
    ...(options.dryRun ? { weights: 'headers' as const } : {}),
  });
  if (resolved.remoteWeights && !options.dryRun) throw new InternalError(`${paths.model}: resolved without its weights (for a dry run), but expand would write from them`);
  if (resolve(paths.output) === resolve(resolved.dir)) {
    throw new UsageError(`-o/--output ${paths.output} is the input model's own folder; write the expanded checkpoint somewhere else`, 'FLAG_CONFLICT');
  }
  refuseInputsInsideOutput(paths.output, [
    { label: 'the input model', path: resolved.dir },
    ...(paths.operators !== undefined ? [{ label: 'the operators', path: paths.operators }] : []),
    ...(paths.updates !== undefined ? [{ label: 'the trained tensors', path: paths.updates }] : []),
  ], '-o/--output');
  const input = await Checkpoint.open(resolved.dir, resolved.remoteWeights ? { remoteWeights: resolved.remoteWeights } : {});
  let updates: TrainedUpdates | undefined;
  try {
    const { spec, warnings } = describeCheckpoint(input);
    const operators = paths.operators !== undefined ? await readOperators(paths.operators, spec) : undefined;
    if (operators && paths.stage !== undefined && operators.meta.stage !== paths.stage) {
      throw new InputError(`${paths.operators}: made for stage ${operators.meta.stage}, but it sits in the folder of stage ${paths.stage}`, 'STAGE_MISMATCH');
    }
    updates = paths.updates !== undefined ? await TrainedUpdates.open(paths.updates, input) : undefined;
    if (operators && operators.meta.setting !== 'operators' && updates === undefined) {
      // The stage also trained weights directly (trained.safetensors); fusing its operators
      // alone gives a model that mixes untrained weights, which evaluates worse than either.
      warnings.push(
        `${paths.operators} was trained in the '${operators.meta.setting}' setting, which also trains weights directly, but no --updates was given: ` +
          `the output fuses the operators into the untrained weights; pass --updates <stage>/trained.safetensors (or use --run <run> --stage n) for the trained model`,
      );
    }
    const plan = planExpansion({ tensors: input.tensors(), spec, operators: operators?.layers ?? [], updates: new Set(updates?.names() ?? []), ...(options.outDtype ? { outDtype: options.outDtype } : {}) });
    if (plan.changed === 0) warnings.push('no tensor changes (the operators are the identity and there are no trained tensors): the output is a byte-for-byte copy of the input');
    const recorded = provenanceString(await readJson(join(input.dir, PROVENANCE_FILE)), 'base_model');
    const baseModel = paths.baseModel ?? recorded ?? paths.model;
    return { paths, resolved, input, spec, ...(operators ? { operators } : {}), ...(updates ? { updates } : {}), plan, baseModel, warnings };
  } catch (e) {
    await updates?.close();
    await input.close();
    throw e;
  }
}

/**
 * The operator file, validated by operator-file.ts. A NaN or Inf in it is a numerical failure
 * of the stage that produced it, reported like every other non-finite tensor (exit 6).
 */
async function readOperators(path: string, spec: ModelSpec): Promise<OperatorFile> {
  try {
    return await readOperatorFile(path, spec);
  } catch (e) {
    if (e instanceof ApexFileFormatError && e.rule === 'finite') {
      throw new VerificationError(`${path}: operator tensor '${e.tensor ?? '?'}' ${e.detail}; refusing to fuse it, nothing was written`, 'NON_FINITE');
    }
    throw e;
  }
}

/**
 * The weights a stage's operators and updates are fused into must be those it was trained from
 * (its record's input model): a base model rewritten in place after training would otherwise
 * give a fused model that matches neither (and provenance that contradicts itself).
 */
async function refuseChangedStageInput(run: string, stage: number, dir: string, digests: readonly ShardDigest[]): Promise<void> {
  const recordPath = join(stageDir(run, stage), PROVENANCE_FILE);
  const record = (await readJson(recordPath)) as { inputs?: { model?: { files?: readonly { file: string; sha256: string }[] } } } | undefined;
  const trainedFrom = (record?.inputs?.model?.files ?? []).filter((f) => f.file.endsWith('.safetensors'));
  if (trainedFrom.length === 0) return; // a record of a version that kept no hashes: nothing to compare
  const changed = fileChanges(trainedFrom, digests, 'when trained');
  if (changed.length > 0) {
    throw new UsageError(
      `${dir} is not the model stage ${stage} of ${run} was trained from (${recordPath}): ${changed.slice(0, 4).join('; ')}${changed.length > 4 ? `; and ${changed.length - 4} more` : ''}. ` +
        'Its operators and updates belong to the earlier weights; restore them, or train the stage again (--force)',
      'RUN_INPUT_CHANGED',
    );
  }
}

async function writeExpanded(inputs: Inputs, output: string, maxShardBytes: number | undefined, options: ExpandOptions, prov: ProvenanceRecorder, say: (m: string) => void): Promise<FileRecord[]> {
  const { input, plan, paths, spec } = inputs;
  const signal = options.signal;
  const copied = new Set(plan.tensors.filter((t) => t.reasons.length === 0).map((t) => t.name));

  say(`hashing the input (${formatBytes(input.totalBytes())})`);
  const inputDigests = await prov.time('hash_input', async () => {
    const out: ShardDigest[] = [];
    for (const file of input.shardFiles) out.push(await digestShard(input.dir, file, { sha256: copied }, signal));
    return out;
  });
  if (paths.run !== undefined && paths.stage !== undefined) await refuseChangedStageInput(paths.run, paths.stage, input.dir, inputDigests);
  const inputTensorSha256 = new Map<string, string>();
  for (const d of inputDigests) for (const [k, v] of d.tensorSha256) inputTensorSha256.set(k, v);

  const operatorsOf = new Map((inputs.operators?.layers ?? []).map((l) => [l.layer, l]));
  const producedCrc32 = new Map<string, number>();
  const scratch = new TensorScratch(plan.memory.scratchBytes);
  let lastLayer = -1;
  const tensors: OutputTensor[] = plan.tensors.map((t) => {
    if (t.reasons.length === 0) return copiedTensor(input.info(t.name));
    return {
      name: t.name,
      dtype: t.outDtype,
      shape: t.shape,
      source: {
        kind: 'bytes',
        data: async () => {
          signal?.throwIfAborted();
          const layer = t.fused?.layer;
          if (layer !== undefined && layer !== lastLayer) {
            lastLayer = layer;
            say(`fusing layer ${layer + 1}/${spec.numLayers}`);
          }
          const t0 = performance.now();
          const bytes = await produceTensor(t, { input, ...(inputs.updates ? { updates: inputs.updates } : {}), operatorsOf, spec, scratch });
          producedCrc32.set(t.name, crc32(bytes));
          prov.add('compute', (performance.now() - t0) / 1000);
          return bytes;
        },
      },
    };
  });

  const files: Record<string, string> = { 'README.md': modelCard(inputs, options) };
  const config = await configWithDtype(join(input.dir, 'config.json'), options.outDtype);
  if (config !== undefined) files['config.json'] = config;

  let shards: FileRecord[] = [];
  const writeStart = performance.now();
  await writeCheckpoint({
    outDir: output,
    input,
    tensors,
    layout: maxShardBytes !== undefined ? { kind: 'plan', maxShardBytes } : { kind: 'keep' },
    files,
    force: options.force ?? false,
    hash: false,
    command: 'apex expand',
    ...(signal ? { signal } : {}),
    ...(options.beforeWrite ? { beforeWrite: options.beforeWrite } : {}),
    onProgress: progressEvery(say),
    onWarning: (m) => inputs.warnings.push(m),
    verify: async (tmp) => {
      const v0 = performance.now();
      prov.add('write', (v0 - writeStart) / 1000);
      say('verifying the written checkpoint');
      const digests = await verifyExpandedCheckpoint({ dir: tmp, input, plan, inputTensorSha256, producedCrc32, ...(signal ? { signal } : {}) });
      shards = digests.map((d) => ({ file: d.file, bytes: d.bytes, sha256: d.sha256 }));
      // The config, tokenizer and index files beside the weights, so the record covers the whole checkpoint.
      const beside: FileRecord[] = [];
      for (const name of [...(await listModelFiles(tmp)), ...(existsSync(join(tmp, INDEX_FILE)) ? [INDEX_FILE] : [])]) {
        const d = await sha256OfFile(join(tmp, name), signal);
        beside.push({ file: name, bytes: d.bytes, sha256: d.sha256 });
      }
      prov.add('verify', (performance.now() - v0) / 1000);
      await writeProvenance(tmp, prov.build({
        seed: inputs.operators?.meta.seed ?? null,
        base_model: inputs.baseModel,
        inputs: {
          model: { path: input.dir, files: inputDigests.map((d) => ({ file: d.file, bytes: d.bytes, sha256: d.sha256 })) },
          ...(paths.operators !== undefined ? { operators: await fileRecord(paths.operators, signal) } : {}),
          ...(paths.updates !== undefined ? { updates: await fileRecord(paths.updates, signal) } : {}),
        },
        outputs: { model: { path: output, files: [...shards, ...beside] } },
        details: {
          ...(paths.run !== undefined ? { run: paths.run, stage: paths.stage } : {}),
          ...(inputs.operators ? { operators_meta: inputs.operators.meta } : {}),
          out_dtype: options.outDtype ?? null,
          max_shard_size: options.maxShardSize ?? null,
          tensors: { total: plan.tensors.length, changed: plan.changed, copied: plan.copied },
          changed: plan.tensors.filter((t) => t.reasons.length > 0).map((t) => ({ name: t.name, reasons: t.reasons })),
          memory_estimate_bytes: plan.memory.totalBytes,
        },
      }));
    },
  });
  return shards;
}

async function fileRecord(path: string, signal?: AbortSignal): Promise<{ path: string; files: FileRecord[] }> {
  const d = await digestShard(dirname(resolve(path)), basename(path), {}, signal);
  return { path: resolve(path), files: [{ file: d.file, bytes: d.bytes, sha256: d.sha256 }] };
}

/** Writer progress as a line roughly every 5% of the bytes. */
function progressEvery(say: (m: string) => void): (done: number, total: number) => void {
  let next = 0;
  return (done, total) => {
    if (total === 0 || done < next) return;
    next = done + total / 20;
    say(`writing ${formatBytes(done)} of ${formatBytes(total)}`);
  };
}

const TORCH_DTYPE_NAMES: Readonly<Record<OutDtype, string>> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

/**
 * config.json with its `torch_dtype` / `dtype` set to the new dtype, edited in the text so
 * everything else stays byte for byte; undefined when no --out-dtype or nothing changes.
 */
export async function configWithDtype(path: string, outDtype: OutDtype | undefined): Promise<string | undefined> {
  if (outDtype === undefined) return undefined;
  const text = await readFile(path, 'utf8');
  const want = TORCH_DTYPE_NAMES[outDtype];
  let changed = false;
  const edited = text.replace(/("(?:torch_dtype|dtype)"\s*:\s*)"([^"]*)"/g, (whole, key: string, value: string) => {
    if (value === want) return whole;
    changed = true;
    return `${key}"${want}"`;
  });
  return changed ? edited : undefined;
}

function modelCard(inputs: Inputs, options: ExpandOptions): string {
  const argv = options.argv ?? [];
  const { paths } = inputs;
  const commandLine = argv.length > 0
    ? redact(['apex', 'expand', ...argv].map(shellWord).join(' '))
    : paths.run !== undefined ? `apex expand --run ${shellWord(paths.run)} --stage ${paths.stage}${resolve(paths.output) === resolve(stageDir(paths.run, paths.stage!), 'model') ? '' : ` -o ${shellWord(paths.output)}`}` : `apex expand ${shellWord(paths.model)}${paths.operators ? ` --operators ${shellWord(paths.operators)}` : ''}${paths.updates ? ` --updates ${shellWord(paths.updates)}` : ''} -o ${shellWord(paths.output)}`;
  const hubId = inputs.resolved.source !== 'local' && inputs.baseModel === paths.model ? inputs.resolved.repo : hubIdOf(inputs.baseModel);
  return renderModelCard({
    baseModel: inputs.baseModel,
    ...(hubId !== undefined ? { baseModelHubId: hubId } : {}),
    inputModel: paths.model,
    ...(paths.stage !== undefined ? { stage: paths.stage } : inputs.operators ? { stage: inputs.operators.meta.stage } : {}),
    ...(inputs.operators ? { operatorsMeta: inputs.operators.meta } : {}),
    ...(paths.operators !== undefined ? { operatorsFile: paths.operators } : {}),
    ...(paths.updates !== undefined ? { updatesFile: paths.updates } : {}),
    updatedTensors: inputs.updates?.names().length ?? 0,
    plan: inputs.plan,
    ...(options.outDtype ? { outDtype: options.outDtype } : {}),
    apexVersion: apexVersion(),
    commandLine: redact(commandLine),
  });
}

/** `org/name` of a Hub-style model argument that does not name a local folder. */
function hubIdOf(arg: string): string | undefined {
  const m = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(@.+)?$/.exec(arg);
  return m && !isLocalPathSync(arg) ? m[1] : undefined;
}

function isLocalPathSync(arg: string): boolean {
  return existsSync(arg);
}

function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
