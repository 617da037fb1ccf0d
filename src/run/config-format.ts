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
 * sha256 (hex) of the canonical JSON of everything that determines what a run computes. The
 * output folder is left out: it is where the run lives, not what it is, so a moved run folder
 * still resumes.
 */
export function configHash(config: ResolvedConfig): string {
  const { output: _where, ...what } = config;
  return createHash('sha256').update(canonicalJson(what)).digest('hex');
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
