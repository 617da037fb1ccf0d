/**
 * The three data sets of an `apex run`, from the `data` section of its config: training
 * sequences, held-out evaluation sequences (a seeded split of the training documents unless
 * `data.eval` names its own files) and calibration sequences for the initial advantage
 * assessment (a seeded sample of the training sequences unless `data.calibration` is given).
 * Every set carries the record of exactly what was read, for summary.json.
 */
import { InputError, UsageError } from '../errors.js';
import type { ApexTokenizer } from '../model/tokenizer.js';
import { BUILTIN_PREFIX, type ResolvedConfig } from '../run/config-schema.js';
import { expandDataPaths } from '../train/data-sources.js';
import { builtinCorpus, loadSequences, type LoadSequencesOptions, type SequenceSet, type SplitName } from '../train/data.js';

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

/** Loads training, evaluation and calibration sequences as the config says. */
export async function loadRunData(
  config: ResolvedConfig,
  tokenizer: ApexTokenizer | undefined,
  onWarning?: (message: string) => void,
  signal?: AbortSignal,
  onProgress?: (message: string) => void,
): Promise<RunData> {
  const { data, seed } = config;
  const common = { tokenizer, seqLen: data.seq_len, seed, splitSeed: seed, seqLenName: 'data.seq_len', evalDataName: 'data.eval', ...(onWarning ? { onWarning } : {}), ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) };
  const load = (sources: readonly string[], split: SplitName, samples?: number, samplesName?: string) =>
    loadSequences({ ...common, ...sourceOptions(sources), split, ...(samples !== undefined ? { samples, samplesName: samplesName! } : {}) });

  const heldOutOfTrain = data.eval === null;
  const train = await load(data.train, heldOutOfTrain ? 'train' : 'all');
  const evalSet = await load(heldOutOfTrain ? data.train : data.eval!, heldOutOfTrain ? 'heldout' : 'all', data.eval_samples ?? undefined, 'data.eval_samples');
  const calibration =
    config.method === 'apex' ? await load(data.calibration ?? data.train, data.calibration !== null || !heldOutOfTrain ? 'all' : 'train', data.calibration_samples, 'data.calibration_samples') : null;
  return { train, eval: evalSet, calibration };
}

/**
 * Checks that every data source of the config exists (a missing file or empty folder exits 3
 * naming the key and every missing path; an unknown built-in corpus exits 2). Run before the
 * model is resolved: a mistyped data path must not wait for (or download) the model first.
 */
export async function checkDataPaths(config: ResolvedConfig): Promise<void> {
  // The baselines ignore data.calibration (docs/config.md), so they do not need it to exist.
  const lists: [string, readonly string[]][] = [['data.train', config.data.train], ['data.eval', config.data.eval ?? []], ...(config.method === 'apex' ? [['data.calibration', config.data.calibration ?? []] as [string, readonly string[]]] : [])];
  const problems: string[] = [];
  let code = 'NOT_FOUND';
  for (const [key, sources] of lists) {
    const options = sourceOptions(sources);
    if (options.builtin !== undefined) {
      builtinCorpus(options.builtin);
      continue;
    }
    for (const path of options.data ?? []) {
      try {
        await expandDataPaths([path]);
      } catch (e) {
        if (!(e instanceof InputError)) throw e;
        if (e.code !== 'NOT_FOUND') code = e.code;
        problems.push(`${key}: ${e.message}`);
      }
    }
  }
  if (problems.length === 1) throw new InputError(problems[0]!, code);
  if (problems.length > 1) throw new InputError(`${problems.length} data paths of the config cannot be read:\n${problems.map((p) => `  ${p}`).join('\n')}`, code);
}

/** The model must have a tokenizer to read the config's text and chat data with (checked once the model is resolved). */
export function checkRunTokenizer(tokenizer: ApexTokenizer | undefined, modelDir: string): void {
  if (tokenizer === undefined) {
    throw new UsageError(`${modelDir} has no tokenizer.json, so the text data of the config cannot be tokenized (apex run reads text and chat data; for token ids use apex finetune --input-ids)`, 'NO_TOKENIZER');
  }
}
