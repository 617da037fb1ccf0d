/**
 * Whether an existing `analysis/stats.safetensors` belongs to the stage-1 run about to use it:
 * made from the same model (its fingerprint) and counted with the same selection ratio and k (the
 * Top-k/Min-k counts depend on k = ⌊n · ratio / 2⌋, and on the stage under `apex analyze
 * --decay-k --stage n`). A run folder reused with another model or `--ratio` would otherwise
 * select units from another model's statistics, or from counts of another k, without a word. The
 * calibration data may differ on purpose (`apex analyze` on its own data), so it is not compared.
 */
import { INDEX_FILE } from '../io/checkpoint.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';
import { countingKMismatch, type CountingK } from '../ops/score-file.js';

export interface AnalysisIdentity {
  /** `modelFingerprint` of the model the stage trains. */
  readonly modelFingerprint: string;
  readonly ratio: number;
  /** The k stage 1 selects with, which the counts must have been made with. */
  readonly countingK: CountingK;
}

/** Why the analysis at `statsPath` does not fit `wanted`, or undefined when it does. */
export async function analysisMismatch(statsPath: string, wanted: AnalysisIdentity): Promise<string | undefined> {
  const file = await SafetensorsFile.open(statsPath);
  const metadata = file.metadata;
  await file.close();
  const reasons: string[] = [];
  const recorded = metadata.model_fingerprint;
  if (recorded !== undefined && !sameModel(recorded, wanted.modelFingerprint)) {
    reasons.push(`was made from another model (fingerprint ${shorten(recorded)}, this model ${shorten(wanted.modelFingerprint)})`);
  }
  const ratio = metadata.ratio !== undefined ? Number(metadata.ratio) : undefined;
  if (ratio !== undefined && ratio !== wanted.ratio) {
    reasons.push(`counted units with ratio ${metadata.ratio}, not --ratio ${wanted.ratio}`);
  }
  const k = countingKMismatch(metadata, wanted.countingK);
  if (k !== undefined && reasons.length === 0) reasons.push(k);
  return reasons.length > 0 ? reasons.join(' and ') : undefined;
}

/**
 * Whether two fingerprints name the same model. Analyses made before 2026-11-27 fingerprinted a
 * sharded model by config.json and its index only: such a record matches when those two files
 * are unchanged (the shards were not recorded, so they cannot be compared).
 */
export function sameModel(recorded: string, current: string): boolean {
  if (recorded === current) return true;
  const parse = (fp: string) => new Map(fp.split(',').map((entry) => [entry.slice(0, entry.lastIndexOf(':')), entry.slice(entry.lastIndexOf(':') + 1)] as const));
  const before = parse(recorded);
  const now = parse(current);
  const indexOnly = before.has(INDEX_FILE) && ![...before.keys()].some((file) => file.endsWith('.safetensors'));
  return indexOnly && [...before].every(([file, sha]) => now.get(file) === sha);
}

/** `config.json:ab12cd34…,model.safetensors:…` → the first 8 hex digits of each hash. */
function shorten(fingerprint: string): string {
  return fingerprint.replace(/:([0-9a-f]{8})[0-9a-f]+/g, ':$1…');
}
