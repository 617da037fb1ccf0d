/**
 * The resolved config as people and resumes see it: YAML for `apex run --print-config` (itself
 * a valid config file) and a stable hash that tells a rerun whether it is the same config.
 */
import { createHash } from 'node:crypto';
import { Document, Scalar, isMap, isScalar, isSeq, type Pair } from 'yaml';
import type { ResolvedConfig } from './config-schema.js';
import type { ResolvedRunConfig } from './config.js';
import { canonicalJson } from '../util/canonical-json.js';

export { canonicalJson };

/**
 * Keys that change how fast a run goes, how much memory it takes or which checkpoints it keeps,
 * but not what it trains or measures, each with why; they are not part of the config hash, so a
 * run folder continues under a new value (the run notes the change). Not among them: `backend`
 * (other kernels round differently), `max_memory` (it also sizes the chunks of the analysis, whose
 * `avg` scores sum in chunk order) and `eval.every` (it decides which evaluations are recorded).
 */
export const RESULTS_NEUTRAL_KEYS: Readonly<Record<string, string>> = {
  // The training-time evaluations use min(eval.batch_size, optimizer.batch_size) and do not touch
  // the training state; the stage trainer does not compare it on --resume either (stage.ts).
  'eval.batch_size': 'it changes the speed and memory of the held-out evaluations, not their perplexity (up to float summation order); each evaluation records the batch it ran with (batchSize in run.json and summary.json)',
  // Recomputed layers give the tape's values and gradients bit for bit (test/model/recomputed-layer.test.ts,
  // test/train/recompute-training.test.ts); the stage trainer does not compare it on --resume either.
  'optimizer.recompute_activations': 'it changes the speed and memory of training (each layer\'s activations are recomputed in the backward pass), not what is trained: the losses, gradients and scores are the same bit for bit',
  // A resumed stage continues exactly as an uninterrupted one (test/train/trainer-resume.test.ts).
  'checkpoint.every': 'it changes where an interrupted stage can resume from, not what is trained (a resumed stage continues exactly)',
  'checkpoint.keep': 'it changes how many training checkpoints stay on disk, not what is trained',
};

/**
 * The config without `output`, the results-neutral keys and unset (null) values: what makes two
 * runs the same run. Unset values are left out because a key a later apex adds is unset (null)
 * by default, and a run.json written before it existed lacks it: both mean "not set", and the
 * older record must still match (its hash is computed again from its config on resume).
 */
function identity(config: ResolvedConfig): Record<string, unknown> {
  const { output: _where, ...what } = withoutNulls(config) as Record<string, unknown>;
  for (const key of Object.keys(RESULTS_NEUTRAL_KEYS)) {
    const [section, leaf] = key.split('.') as [string, string];
    const value = what[section];
    // A record written by another apex version may lack a section; then there is nothing to leave out.
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const { [leaf]: _neutral, ...rest } = value as Record<string, unknown>;
      what[section] = rest;
    }
  }
  return what;
}

/** The value with every null member of a mapping dropped, at any depth (list items are kept as they are). */
function withoutNulls(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== null).map(([k, v]) => [k, withoutNulls(v)]));
}

/**
 * sha256 (hex) of the canonical JSON of everything that determines what a run computes. The
 * output folder is left out: it is where the run lives, not what it is, so a moved run folder
 * still resumes; so are RESULTS_NEUTRAL_KEYS and unset values.
 */
export function configHash(config: ResolvedConfig): string {
  return createHash('sha256').update(canonicalJson(identity(config))).digest('hex');
}

/** The key-value pair at a path of nested mappings, if every section on the way is a mapping. */
function pairAt(doc: Document, keys: string[]): Pair | undefined {
  const parent = keys.length === 1 ? doc.contents : doc.getIn(keys.slice(0, -1), true);
  if (!isMap(parent)) return undefined;
  const last = keys[keys.length - 1];
  return parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === last);
}

/**
 * YAML of the resolved config. Values that did not come from a default carry a `# file` or
 * `# override` comment; the text is itself a valid config file for `apex run`.
 */
export function formatResolvedConfig(resolved: ResolvedRunConfig): string {
  const doc = new Document(resolved.config);
  const origin =
    resolved.file === null
      ? ' No config file: the embedded default; values marked "override" were set on the command line.'
      : ` Config file ${resolved.file}: values marked "file" come from it, "override" from the command line, the rest are defaults.`;
  doc.commentBefore = ` apex run: resolved configuration (config hash ${configHash(resolved.config).slice(0, 16)})\n${origin}`;
  for (const [key, source] of Object.entries(resolved.sources)) {
    const pair = pairAt(doc, key.split('.'));
    if (pair === undefined) continue; // inside a section that does not apply (null)
    const value = pair.value;
    if (isSeq(value) && value.items.every((item) => isScalar(item) && typeof item.value === 'number')) value.flow = true;
    if (source === 'default') continue;
    if (isSeq(value) && !value.flow) {
      // A comment on a block list would land below its items; put it after the key instead.
      if (!isScalar(pair.key)) pair.key = new Scalar(pair.key);
      (pair.key as Scalar).comment = ` ${source}`;
    } else if (isScalar(value) || isSeq(value)) {
      value.comment = ` ${source}`;
    }
  }
  return doc.toString({ lineWidth: 0 });
}
