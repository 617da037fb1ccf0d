/**
 * Whether an existing `analysis/stats.safetensors` belongs to the stage-1 run about to use it:
 * made from the same model (its fingerprint) and counted with the same selection ratio (the
 * Top-k/Min-k counts depend on k = ⌊n · ratio / 2⌋). A run folder reused with another model or
 * `--ratio` would otherwise select units from another model's statistics without a word. The
 * calibration data may differ on purpose (`apex analyze` on its own data), so it is not compared.
 */
import { SafetensorsFile } from '../io/safetensors-reader.js';

export interface AnalysisIdentity {
  /** `modelFingerprint` of the model the stage trains. */
  readonly modelFingerprint: string;
  readonly ratio: number;
}

/** Why the analysis at `statsPath` does not fit `wanted`, or undefined when it does. */
export async function analysisMismatch(statsPath: string, wanted: AnalysisIdentity): Promise<string | undefined> {
  const file = await SafetensorsFile.open(statsPath);
  const metadata = file.metadata;
  await file.close();
  const reasons: string[] = [];
  const recorded = metadata.model_fingerprint;
  if (recorded !== undefined && recorded !== wanted.modelFingerprint) {
    reasons.push(`was made from another model (fingerprint ${shorten(recorded)}, this model ${shorten(wanted.modelFingerprint)})`);
  }
  const ratio = metadata.ratio !== undefined ? Number(metadata.ratio) : undefined;
  if (ratio !== undefined && ratio !== wanted.ratio) {
    reasons.push(`counted units with ratio ${metadata.ratio}, not --ratio ${wanted.ratio}`);
  }
  return reasons.length > 0 ? reasons.join(' and ') : undefined;
}

/** `config.json:ab12cd34…,model.safetensors:…` → the first 8 hex digits of each hash. */
function shorten(fingerprint: string): string {
  return fingerprint.replace(/:([0-9a-f]{8})[0-9a-f]+/g, ':$1…');
}
