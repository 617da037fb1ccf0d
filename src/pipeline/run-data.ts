/**
 * The three data sets of an `apex run`, from the `data` section of its config: training
 * sequences, held-out evaluation sequences (a seeded split of the training documents unless
 * `data.eval` or `data.eval_input_ids` gives its own) and calibration sequences for the initial
 * advantage assessment (a seeded sample of the training sequences unless `data.calibration` or
 * `data.calibration_input_ids` is given). Each set is text/chat files or a safetensors file of
 * token ids, read by the same loader as --data and --input-ids of finetune, eval and analyze.
 * Every set carries the record of exactly what was read, for summary.json.
 */
import { statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { InputError, UsageError } from '../errors.js';
import type { ApexTokenizer } from '../model/tokenizer.js';
import { BUILTIN_PREFIX, type DataConfig, type ResolvedConfig } from '../run/config-schema.js';
import { expandDataPaths } from '../train/data-sources.js';
import { builtinCorpus, loadSequences, sampleSequences, type LoadSequencesOptions, type SequenceSet, type SplitName } from '../train/data.js';

export interface RunData {
  readonly train: SequenceSet;
  readonly eval: SequenceSet;
  /** Method apex only (the initial advantage assessment); null for the baselines. */
  readonly calibration: SequenceSet | null;
}

/** `loadSequences` input for a list of sources: one built-in corpus by name, else files (built-ins expanded to theirs). */
export function sourceOptions(sources: readonly string[]): Pick<LoadSequencesOptions, 'builtin' | 'data'> {
  const builtinName = (s: string) => s.slice(BUILTIN_PREFIX.length);
  if (sources.length === 1 && sources[0]!.startsWith(BUILTIN_PREFIX)) return { builtin: builtinName(sources[0]!) };
  return { data: sources.flatMap((s) => (s.startsWith(BUILTIN_PREFIX) ? builtinCorpus(builtinName(s)) : [s])) };
}

/** Where one data set comes from, as loadSequences takes it. */
export type DataSource = Pick<LoadSequencesOptions, 'builtin' | 'data' | 'inputIds'>;

export type DataSetName = 'train' | 'eval' | 'calibration';

/** The source a data set names itself (`data.<set>` or `data.<set>_input_ids`), or null when it names none. */
export function dataSource(data: DataConfig, set: DataSetName): DataSource | null {
  const ids = data[`${set}_input_ids`];
  if (ids !== null) return { inputIds: ids };
  const files = data[set];
  return files === null ? null : sourceOptions(files);
}

/** The training source; the config rules make one of data.train and data.train_input_ids set. */
export function trainSource(data: DataConfig): DataSource {
  const source = dataSource(data, 'train');
  if (source === null) throw new UsageError('data.train or data.train_input_ids must be set', 'CONFIG_INVALID');
  return source;
}

/** Loads training, evaluation and calibration sequences as the config says. */
export async function loadRunData(
  config: ResolvedConfig,
  tokenizer: ApexTokenizer | undefined,
  onWarning?: (message: string) => void,
  signal?: AbortSignal,
  onProgress?: (message: string) => void,
): Promise<RunData> {
  const { data, seed } = config;
  const common = { tokenizer, seqLen: data.seq_len, seed, splitSeed: seed, seqLenName: 'data.seq_len', evalDataName: 'data.eval or data.eval_input_ids', ...(onWarning ? { onWarning } : {}), ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) };
  const load = (source: DataSource, split: SplitName, samples: number | null, samplesName: string) =>
    loadSequences({ ...common, ...source, split, ...(samples !== null ? { samples, samplesName } : {}) });

  const training = trainSource(data);
  const ownEval = dataSource(data, 'eval');
  const heldOutOfTrain = ownEval === null;
  const train = await load(training, heldOutOfTrain ? 'train' : 'all', data.train_samples, 'data.train_samples');
  const evalSet = await load(ownEval ?? training, heldOutOfTrain ? 'heldout' : 'all', data.eval_samples, 'data.eval_samples');
  let calibration: SequenceSet | null = null;
  if (config.method === 'apex') {
    const ownCalibration = dataSource(data, 'calibration');
    if (ownCalibration !== null) calibration = await load(ownCalibration, 'all', data.calibration_samples, 'data.calibration_samples');
    // Loaded with the sample count, the calibration set is the same choice as a sample of the
    // training set loaded whole (sampleSequences); a training set that is itself a sample
    // (data.train_samples) is sampled from, as finetune's stage-1 analysis samples --samples' set.
    else if (data.train_samples === null) calibration = await load(training, heldOutOfTrain ? 'train' : 'all', data.calibration_samples, 'data.calibration_samples');
    else {
      if (data.calibration_samples > train.sequences.length) {
        onWarning?.(`data.calibration_samples ${data.calibration_samples}: the training sample (data.train_samples ${data.train_samples}) has only ${train.sequences.length} sequences; using all of them`);
      }
      calibration = sampleSequences(train, data.calibration_samples, seed);
    }
  }
  return { train, eval: evalSet, calibration };
}

/**
 * Checks that every data source of the config exists (a missing file or empty folder exits 3
 * naming the key and every missing path; an unknown built-in corpus exits 2). Run before the
 * model is resolved: a mistyped data path must not wait for (or download) the model first.
 */
export async function checkDataPaths(config: ResolvedConfig): Promise<void> {
  // The baselines ignore the calibration keys (docs/config.md), so they do not need them to exist.
  const sets: DataSetName[] = config.method === 'apex' ? ['train', 'eval', 'calibration'] : ['train', 'eval'];
  const problems: string[] = [];
  let code = 'NOT_FOUND';
  for (const set of sets) {
    const ids = config.data[`${set}_input_ids`];
    if (ids !== null) {
      const problem = idsFileProblem(ids);
      if (problem !== undefined) {
        problems.push(`data.${set}_input_ids: ${problem.message}`);
        if (problem.code !== 'NOT_FOUND') code = problem.code;
      }
    }
    const options = sourceOptions(config.data[set] ?? []);
    if (options.builtin !== undefined) {
      builtinCorpus(options.builtin);
      continue;
    }
    for (const path of options.data ?? []) {
      try {
        for (const file of await expandDataPaths([path])) {
          const problem = await runDataFileProblem(file);
          if (problem === undefined) continue;
          code = 'NOT_A_FILE';
          problems.push(`data.${set}: ${problem}`);
        }
      } catch (e) {
        if (!(e instanceof InputError)) throw e;
        if (e.code !== 'NOT_FOUND') code = e.code;
        problems.push(`data.${set}: ${e.message}`);
      }
    }
  }
  if (problems.length === 1) throw new InputError(problems[0]!, code);
  if (problems.length > 1) throw new InputError(`${problems.length} data paths of the config cannot be read:\n${problems.map((p) => `  ${p}`).join('\n')}`, code);
}

/**
 * Why `file`, a data file a run config names, cannot serve `apex run` (undefined when it can).
 * A run reads its data files more than once: loaded when a stage needs them, and hashed again on
 * every rerun to see whether they changed since the run began. A named pipe (or /dev/stdin fed
 * by one) gives its bytes once, then blocks or ends empty; a device (/dev/zero) never ends. So
 * they are refused before anything is written, though --data of finetune, eval and analyze, read
 * once, accepts them (pipe-stream.ts). Folders only ever yield regular files (data-sources.ts).
 */
export async function runDataFileProblem(file: string): Promise<string | undefined> {
  const st = await stat(file);
  if (st.isFile()) return undefined;
  const kind = st.isFIFO() ? 'a named pipe' : st.isSocket() ? 'a socket' : 'a device';
  return `${file}: not a regular file (${kind}); apex run reads its data files again when it resumes or is rerun (it hashes them to see whether they changed), so they must be regular files (a pipe can feed --data of apex finetune, eval or analyze, which read it once)`;
}

/**
 * Why a token-ids path is not a file, if it is not (its content is checked when it is read):
 * NOT_A_FILE when it exists as something else (a folder, a pipe, a device), as for the other
 * data files; NOT_FOUND otherwise.
 */
function idsFileProblem(path: string): { message: string; code: string } | undefined {
  try {
    return statSync(path).isFile() ? undefined : { message: `${path} is not a regular file (token ids are one safetensors file, which apex run reads again when it resumes or is rerun)`, code: 'NOT_A_FILE' };
  } catch (e) {
    return { message: (e as NodeJS.ErrnoException).code === 'ENOENT' ? `no such file ${path}` : `${path}: ${(e as Error).message}`, code: 'NOT_FOUND' };
  }
}

/**
 * The model must have a tokenizer for the text and chat data the config reads (checked once
 * the model is resolved); data given as token ids needs none.
 */
export function checkRunTokenizer(tokenizer: ApexTokenizer | undefined, modelDir: string, config: ResolvedConfig): void {
  if (tokenizer !== undefined) return;
  const sets: DataSetName[] = config.method === 'apex' ? ['train', 'eval', 'calibration'] : ['train', 'eval'];
  const text = sets.filter((set) => config.data[set] !== null).map((set) => `data.${set}`);
  if (text.length === 0) return;
  throw new UsageError(
    `${modelDir} has no tokenizer.json, so the text data of ${text.join(', ')} cannot be tokenized; give ${text.length === 1 ? 'it' : 'them'} as token ids instead (${text.map((k) => `${k}_input_ids`).join(', ')}: a safetensors file of I32/I64 [B, T] ids, as --input-ids of apex finetune)`,
    'NO_TOKENIZER',
  );
}
