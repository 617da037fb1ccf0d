/**
 * The three data sets of an `apex run`, from the `data` section of its config: training
 * sequences, held-out evaluation sequences (a seeded split of the training documents unless
 * `data.eval` names its own files) and calibration sequences for the initial advantage
 * assessment (a seeded sample of the training sequences unless `data.calibration` is given).
 * Every set carries the record of exactly what was read, for summary.json.
 */
import { UsageError } from '../errors.js';
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
export async function loadRunData(config: ResolvedConfig, tokenizer: ApexTokenizer | undefined, onWarning?: (message: string) => void, signal?: AbortSignal): Promise<RunData> {
  const { data, seed } = config;
  const common = { tokenizer, seqLen: data.seq_len, seed, splitSeed: seed, seqLenName: 'data.seq_len', evalDataName: 'data.eval', ...(onWarning ? { onWarning } : {}), ...(signal ? { signal } : {}) };
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
 * Checks, before a run folder is created, that every data source exists (a missing file exits
 * 3, an unknown built-in corpus 2) and that the model has a tokenizer to read text with.
 */
export async function checkDataSources(config: ResolvedConfig, tokenizer: ApexTokenizer | undefined, modelDir: string): Promise<void> {
  // The baselines ignore data.calibration (docs/config.md), so they do not need it to exist.
  const lists = [config.data.train, config.data.eval ?? [], config.method === 'apex' ? (config.data.calibration ?? []) : []];
  for (const sources of lists) {
    const options = sourceOptions(sources);
    if (options.data) await expandDataPaths(options.data);
    else if (options.builtin !== undefined) builtinCorpus(options.builtin);
  }
  if (tokenizer === undefined) {
    throw new UsageError(`${modelDir} has no tokenizer.json, so the text data of the config cannot be tokenized`, 'NO_TOKENIZER');
  }
}
