/**
 * Trainer-state checkpoints (`stages/<n>/checkpoints/`), so a killed run resumes where it was
 * (issue 6). One checkpoint is a folder `step-<8 digits>` holding
 *
 *     tensors.safetensors   F32: `param.<name>` every trainable tensor, `adam_m.<name>` and
 *                           `adam_v.<name>` its AdamW moments
 *     state.json            the scalars: step counters, data position, RNG state, recorder
 *                           counts, learning-rate plan, optimizer step
 *
 * written atomically through `writeAtomicFolder` (temporary sibling folder, fsync, rename): a
 * folder with the final name is complete, anything else (`.tmp-…`, `.old-…`, a lock) is
 * ignored by `latestCheckpoint` and cleaned up by the next save. After each save only the
 * newest `keep` checkpoints remain.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, ResourceLimitError } from '../errors.js';
import { fsyncFile, nearestExistingFolder, writeAtomicFolder } from '../io/atomic-output.js';
import { formatBytes } from '../io/byte-size.js';
import { ioError } from '../io/io-error.js';
import { removeStaleLock } from '../io/output-lock.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';
import { f32Tensor, planSafetensorsLayout, type TensorToWrite, writeSafetensorsFile } from '../io/safetensors-writer.js';
import type { RankRecorderState } from '../ops/rank-counts.js';
import type { AdamWMoments, AdamWState } from './adamw.js';
import type { LrPlan } from './lr-schedule.js';
import type { ResumeKey } from './stage-resume-key.js';
import { usableFreeBytes } from '../io/free-space.js';

/**
 * 2 since 2026-11-28, with nothing changed in the layout: an apex from before refuses these
 * checkpoints (it knows only 1), instead of resuming them under its older rules. Version 1 is
 * still read; the stage refuses one that does not record its settings (stage.ts).
 */
export const TRAIN_STATE_VERSION = 2;
const READABLE_VERSIONS: readonly number[] = [1, 2];
const TENSORS_FILE = 'tensors.safetensors';
const TENSORS_METADATA = { format: 'apex-train-state' };
const STATE_FILE = 'state.json';
const CHECKPOINT_NAME = /^step-(\d+)$/;
const CHECKPOINT_LOCK_NAME = /^step-\d+\.lock$/;

/** Where the data stream stands: the next example to read. */
export interface DataPosition {
  readonly epoch: number;
  /** Index of the next example (or packed sequence) within the epoch's order. */
  readonly index: number;
  /** Seed of the epoch's shuffle. */
  readonly shuffleSeed: number;
}

/** Everything but tensors; plain JSON. */
export interface TrainStateScalars {
  /** Stage index, 1-based. */
  readonly stage: number;
  /** Optimizer steps completed in this stage. */
  readonly step: number;
  /** Optimizer steps completed over all stages (the learning-rate plan's step). */
  readonly globalStep: number;
  /** Target tokens trained in this stage (for --tokens budgets). */
  readonly tokens: number;
  readonly data: DataPosition;
  /** `Rng.state()` of the trainer's generator. */
  readonly rng: readonly number[];
  readonly lrPlan: LrPlan;
  /**
   * sha256 of the training sequences (and loss masks) and the data-order seed, so a resume on
   * other data or with another --seed is refused (absent in checkpoints of older versions).
   */
  readonly dataFingerprint?: string;
  readonly dataSeed?: number;
  /** The training data's files and their sha256, to name what changed (absent in older checkpoints). */
  readonly dataFiles?: readonly { readonly file: string; readonly sha256: string }[];
  /** Rank counts recorded so far in this stage (absent for baselines without a recorder). */
  readonly recorder?: RankRecorderState;
  /** The other settings that decide the results (stage-resume-key.ts; absent in checkpoints of older versions). */
  readonly settings?: ResumeKey;
  /** Backend that made the checkpoint (absent in older versions): a resume elsewhere differs by rounding. */
  readonly backend?: string;
  /**
   * True when Ctrl-C stopped the held-out evaluation due after this step: the step's update is
   * in the checkpoint, its evaluation is not, and a resumed run runs it before the next step.
   * Absent (older versions, or nothing owed) means no evaluation is owed.
   */
  readonly pendingEval?: boolean;
  /**
   * Whether the sessions that trained this stage so far recomputed activations
   * (--recompute-activations), from which step, one entry per change (provenance only: the
   * option changes speed and memory, not the results). `null`: an older checkpoint's session,
   * which did not record it. Absent in older checkpoints.
   */
  readonly recomputeFrom?: readonly RecomputeSpan[];
}

/** From `fromStep` on (until the next span), the stage was trained with recomputation on or off. */
export interface RecomputeSpan {
  readonly fromStep: number;
  readonly recompute: boolean | null;
}

/** The spans with this session's setting from `step` on (a change only when it differs from the last span). */
export function withRecomputeSpan(before: readonly RecomputeSpan[] | undefined, step: number, recompute: boolean): RecomputeSpan[] {
  const spans = before ? [...before] : step > 0 ? [{ fromStep: 0, recompute: null }] : [];
  return spans.at(-1)?.recompute === recompute ? spans : [...spans, { fromStep: step, recompute }];
}

/** A trainable tensor: its values, or a function producing them when the writer reaches it. */
export interface TrainableTensor {
  readonly shape: readonly number[];
  readonly values: Float32Array | (() => Float32Array | Promise<Float32Array>);
}

export interface TrainStateToSave {
  readonly scalars: TrainStateScalars;
  readonly trainable: ReadonlyMap<string, TrainableTensor>;
  /**
   * The moments in memory, or read one tensor at a time as the writer reaches them (the trainer's
   * way: the checkpoint then holds one tensor's values on the JavaScript side, not all moments).
   */
  readonly optimizer: AdamWState | AdamWMoments;
}

/**
 * A checkpoint as `loadTrainState` finds it: its scalars and what its tensors file holds, with no
 * tensor values read. `readTrainStateTensors` reads them, one trainable tensor at a time.
 */
export interface LoadedTrainState {
  readonly path: string;
  readonly scalars: TrainStateScalars;
  /** AdamW's update count when the checkpoint was saved (t of the bias correction). */
  readonly optimizerStep: number;
  /** Every trainable tensor's name and shape, in the order they were saved. */
  readonly trainable: ReadonlyMap<string, readonly number[]>;
  /** The tensors' recorded sha256 (absent in checkpoints of older versions), checked as they are read. */
  readonly tensorSha256?: Readonly<Record<string, string>>;
}

/** One trainable tensor of a checkpoint: its values and both AdamW moments. */
export interface TrainStateTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly values: Float32Array;
  readonly firstMoment: Float32Array;
  readonly secondMoment: Float32Array;
}

interface StateFile {
  readonly version: number;
  readonly optimizerStep: number;
  readonly trainable: readonly string[];
  readonly scalars: TrainStateScalars;
  /**
   * sha256 of every tensor's bytes and of the scalars' JSON, checked when the checkpoint is
   * loaded: a flipped bit would otherwise resume silently into other weights or another data
   * order (absent in checkpoints of older versions, which load unchecked).
   */
  readonly tensorSha256?: Readonly<Record<string, string>>;
  readonly scalarsSha256?: string;
}

function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/**
 * Saves a checkpoint for `state.scalars.step` into `checkpointsDir` atomically and prunes all
 * but the newest `keep`. Returns the checkpoint's folder.
 */
export async function saveTrainState(checkpointsDir: string, state: TrainStateToSave, keep = 2): Promise<string> {
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`saveTrainState: keep must be an integer >= 1, got ${keep}`);
  const out = join(checkpointsDir, checkpointName(state.scalars.step));
  const names = [...state.trainable.keys()];
  const moments = momentsOf(state.optimizer);
  for (const name of names) {
    if (!moments.has(name)) throw new Error(`saveTrainState: no optimizer moments for trainable tensor '${name}'`);
  }
  await writeAtomicFolder(out, { force: true, command: 'apex finetune (checkpoint)' }, async (tmp) => {
    const tensors: TensorToWrite[] = [];
    for (const [name, t] of state.trainable) {
      tensors.push(f32Tensor(`param.${name}`, t.shape, t.values));
      tensors.push(f32Tensor(`adam_m.${name}`, t.shape, moments.first(name)));
      tensors.push(f32Tensor(`adam_v.${name}`, t.shape, moments.second(name)));
    }
    const written = await writeSafetensorsFile(join(tmp, TENSORS_FILE), tensors, TENSORS_METADATA, { hash: true });
    const file: StateFile = {
      version: TRAIN_STATE_VERSION,
      optimizerStep: moments.step,
      trainable: names,
      scalars: state.scalars,
      tensorSha256: Object.fromEntries(written.map((t) => [t.name, t.sha256!])),
      scalarsSha256: sha256Hex(JSON.stringify(state.scalars)),
    };
    await writeFile(join(tmp, STATE_FILE), JSON.stringify(file)).catch((e: unknown) => { throw ioError(join(out, STATE_FILE), 'write the checkpoint', e); });
    await fsyncFile(join(tmp, STATE_FILE));
  });
  await pruneCheckpoints(checkpointsDir, keep);
  return out;
}

/**
 * Bytes one checkpoint takes on disk: tensors.safetensors (each trainable tensor three times as
 * float32: the parameters and both AdamW moments) and state.json (with these scalars), plus
 * room for the lock file, block rounding and counters that grow a digit.
 */
export function trainStateBytes(trainable: ReadonlyMap<string, { readonly shape: readonly number[] }>, scalars: TrainStateScalars): number {
  const descriptors = [...trainable].flatMap(([name, t]) => ['param', 'adam_m', 'adam_v'].map((kind) => ({ name: `${kind}.${name}`, dtype: 'F32' as const, shape: t.shape })));
  const tensorsBytes = planSafetensorsLayout(descriptors, TENSORS_METADATA).fileBytes;
  const names = [...trainable.keys()];
  const file: StateFile = {
    version: TRAIN_STATE_VERSION,
    optimizerStep: scalars.step,
    trainable: names,
    scalars,
    tensorSha256: Object.fromEntries(descriptors.map((d) => [d.name, '0'.repeat(64)])),
    scalarsSha256: '0'.repeat(64),
  };
  return tensorsBytes + Buffer.byteLength(JSON.stringify(file)) + 64 * 1024;
}

/**
 * Refuses to start (or resume) training when the filesystem of `checkpointsDir` has no room for
 * one checkpoint (exit 5, DISK_FULL): every stage saves one after its last step, so a run
 * that could not save it would train to the end and then lose the work. Checked before step 1;
 * space taken meanwhile by other writers is not foreseen. `free` is injected by tests.
 */
export async function checkTrainStateSpace(checkpointsDir: string, bytes: number, free: (folder: string) => Promise<number | undefined> = freeBytes): Promise<void> {
  const folder = await nearestExistingFolder(checkpointsDir);
  let available: number | undefined;
  try {
    available = await free(folder);
  } catch {
    return; // no answer (e.g. statfs unsupported): the write itself will say it
  }
  if (available !== undefined && bytes > available) {
    throw new ResourceLimitError(
      `not enough disk space for a checkpoint in ${checkpointsDir}: one needs ${formatBytes(bytes)}, ${formatBytes(available)} free on that filesystem; free some space (or choose another -o) before training, nothing was trained`,
      'DISK_FULL',
    );
  }
}

async function freeBytes(folder: string): Promise<number | undefined> {
  return usableFreeBytes(await statfs(folder));
}

/** Complete checkpoints in `checkpointsDir`, oldest first. */
export async function listCheckpoints(checkpointsDir: string): Promise<{ step: number; path: string }[]> {
  let entries: string[];
  try {
    entries = await readdir(checkpointsDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const found: { step: number; path: string }[] = [];
  for (const name of entries) {
    const m = CHECKPOINT_NAME.exec(name);
    if (m === null) continue;
    const path = join(checkpointsDir, name);
    if (!(await isFile(join(path, STATE_FILE))) || !(await isFile(join(path, TENSORS_FILE)))) continue;
    found.push({ step: Number(m[1]), path });
  }
  return found.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint's folder, or undefined when there is none. */
export async function latestCheckpoint(checkpointsDir: string): Promise<string | undefined> {
  return (await listCheckpoints(checkpointsDir)).at(-1)?.path;
}

/** CHECKPOINT_CORRUPT for `file` (state.json or tensors.safetensors of a checkpoint), with what to do. */
function corruptCheckpoint(file: string, what: string): InputError {
  return new InputError(`${file}: ${what}: the checkpoint is corrupt; resume from an earlier one (delete this folder) or start over with --force`, 'CHECKPOINT_CORRUPT');
}

/** A checkpoint's state.json, its version and scalars checked. */
async function readStateFile(path: string): Promise<StateFile> {
  let file: StateFile;
  try {
    file = JSON.parse(await readFile(join(path, STATE_FILE), 'utf8')) as StateFile;
  } catch (e) {
    throw new InputError(`${path}: unreadable trainer checkpoint (${(e as Error).message})`, 'CHECKPOINT_UNREADABLE', { cause: e });
  }
  if (!READABLE_VERSIONS.includes(file.version)) {
    throw new InputError(`${path}: trainer checkpoint version ${file.version} is not supported (this apex reads ${READABLE_VERSIONS.join(' and ')}: a newer apex wrote it?)`, 'CHECKPOINT_VERSION');
  }
  if (file.scalarsSha256 !== undefined && sha256Hex(JSON.stringify(file.scalars)) !== file.scalarsSha256) {
    throw corruptCheckpoint(join(path, STATE_FILE), 'the scalars (step, data position, RNG state, …) do not match their recorded sha256');
  }
  // Outside the scalars' digest (and version 1 records none): refused here, when the checkpoint
  // is opened (a dry run too), rather than by AdamW.restoreStep after the whole restore.
  const optimizerStep: unknown = file.optimizerStep;
  const trainable: unknown = file.trainable;
  if (!Number.isSafeInteger(optimizerStep) || (optimizerStep as number) < 0 || !Array.isArray(trainable) || trainable.some((n) => typeof n !== 'string')) {
    throw corruptCheckpoint(join(path, STATE_FILE), 'optimizerStep must be an integer >= 0 and trainable a list of tensor names');
  }
  // Checked against what the digests cover: the optimizer steps once per training step (a
  // non-finite gradient stops the stage rather than skipping one), and the tensors' sha256 are
  // recorded by name. An edited digit would otherwise resume into other bias corrections.
  const corrupt = (what: string) => corruptCheckpoint(join(path, STATE_FILE), what);
  if (file.scalarsSha256 !== undefined && file.optimizerStep !== file.scalars.step) {
    throw corrupt(`optimizerStep ${file.optimizerStep} is not the checkpoint's step ${file.scalars.step}`);
  }
  if (file.tensorSha256 !== undefined) {
    const recorded: unknown = file.tensorSha256;
    if (recorded === null || typeof recorded !== 'object' || Array.isArray(recorded) || Object.values(recorded).some((h) => typeof h !== 'string')) {
      throw corrupt('tensorSha256 must be an object of sha256 strings by tensor name');
    }
    const listed = new Set(file.trainable.flatMap((n) => ['param', 'adam_m', 'adam_v'].map((prefix) => `${prefix}.${n}`)));
    const hashed = Object.keys(file.tensorSha256);
    if (listed.size !== 3 * file.trainable.length || hashed.length !== listed.size || !hashed.every((n) => listed.has(n))) {
      throw corrupt('the list of trainable tensors does not match the tensors whose sha256 it records');
    }
  }
  return file;
}

/**
 * Opens a checkpoint written by `saveTrainState`: its state file (version and scalars checked)
 * and its tensors file's header, which must hold every trainable tensor and both moments, all of
 * one shape. No tensor values are read (`readTrainStateTensors` does, one tensor at a time): a
 * checkpoint of a 1.1B-parameter model trained whole holds 13 GB of them.
 */
export async function loadTrainState(path: string): Promise<LoadedTrainState> {
  const file = await readStateFile(path);
  const tensors = await SafetensorsFile.open(join(path, TENSORS_FILE));
  try {
    const trainable = new Map<string, readonly number[]>();
    for (const name of file.trainable) {
      const shape = requireTensor(path, tensors, `param.${name}`);
      for (const moment of [`adam_m.${name}`, `adam_v.${name}`]) {
        const other = requireTensor(path, tensors, moment);
        if (other.length !== shape.length || other.some((d, i) => d !== shape[i])) {
          throw corruptCheckpoint(join(path, TENSORS_FILE), `tensor '${moment}' has shape [${other}], its parameter 'param.${name}' [${shape}]`);
        }
      }
      trainable.set(name, shape);
    }
    return { path, scalars: file.scalars, optimizerStep: file.optimizerStep, trainable, ...(file.tensorSha256 ? { tensorSha256: file.tensorSha256 } : {}) };
  } finally {
    await tensors.close();
  }
}

/** The shape of tensor `name` of a checkpoint's tensors file; CHECKPOINT_INCOMPLETE when it lacks it. */
function requireTensor(path: string, tensors: SafetensorsFile, name: string): readonly number[] {
  if (!tensors.has(name)) throw new InputError(`${path}: trainer checkpoint lacks tensor '${name}'`, 'CHECKPOINT_INCOMPLETE');
  return [...tensors.info(name).shape];
}

/**
 * Reads a loaded checkpoint's trainable tensors and their moments, each checked against its
 * recorded sha256, and hands them to `visit` one trainable tensor at a time: the next is read once
 * `visit` has returned, so only one tensor's three arrays need be alive (the caller copies them
 * into its variables and optimizer). A corrupt tensor stops the reading with CHECKPOINT_CORRUPT
 * after the tensors before it were visited.
 */
export async function readTrainStateTensors(state: LoadedTrainState, visit: (tensor: TrainStateTensor) => void | Promise<void>): Promise<void> {
  const tensorsPath = join(state.path, TENSORS_FILE);
  const tensors = await SafetensorsFile.open(tensorsPath);
  const read = async (name: string): Promise<Float32Array> => {
    requireTensor(state.path, tensors, name);
    const values = await tensors.readFloat32(name);
    const recorded = state.tensorSha256?.[name];
    // F32 on a little-endian machine: the decoded array's bytes are the file's bytes.
    if (recorded !== undefined && sha256Hex(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)) !== recorded) {
      throw corruptCheckpoint(tensorsPath, `tensor '${name}' does not match its recorded sha256`);
    }
    return values;
  };
  try {
    for (const [name, shape] of state.trainable) {
      await visit({ name, shape, values: await read(`param.${name}`), firstMoment: await read(`adam_m.${name}`), secondMoment: await read(`adam_v.${name}`) });
    }
  } finally {
    await tensors.close();
  }
}

/** Removes all complete checkpoints but the newest `keep`. */
async function pruneCheckpoints(checkpointsDir: string, keep: number): Promise<void> {
  const all = await listCheckpoints(checkpointsDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await rm(old.path, { recursive: true, force: true });
  // A process killed while saving a checkpoint leaves that checkpoint's lock file behind.
  for (const name of await readdir(checkpointsDir)) {
    if (CHECKPOINT_LOCK_NAME.test(name)) await removeStaleLock(join(checkpointsDir, name));
  }
}

/** Both forms of the moments as the writer takes them: values, or a function it calls when it reaches the tensor. */
function momentsOf(optimizer: AdamWState | AdamWMoments): { step: number; has(name: string): boolean; first(name: string): TrainableTensor['values']; second(name: string): TrainableTensor['values'] } {
  if ('firstMoments' in optimizer) {
    return {
      step: optimizer.step,
      has: (name) => optimizer.firstMoments.has(name) && optimizer.secondMoments.has(name),
      first: (name) => optimizer.firstMoments.get(name)!,
      second: (name) => optimizer.secondMoments.get(name)!,
    };
  }
  const names = new Set(optimizer.names);
  return { step: optimizer.step, has: (name) => names.has(name), first: (name) => () => optimizer.first(name), second: (name) => () => optimizer.second(name) };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
