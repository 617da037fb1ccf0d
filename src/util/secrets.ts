/**
 * Keeps access tokens out of everything apex prints or writes: logs, `--json` output,
 * provenance files and error messages.
 */

const known = new Set<string>();

/** Registers a secret (e.g. the resolved HF token) so that `redact` masks it everywhere. */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 4) known.add(secret);
}

const TOKEN_PATTERNS: RegExp[] = [
  // Hugging Face user/org tokens ("hf_" + 34 letters today): ≥ 30 characters as a whole word,
  // so folder names such as /data/hf_checkpoints or hf_downloads (paths apex records and reads
  // back) are left as written; a registered token is masked whatever its shape (above).
  /(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9_])/g,
  /(Authorization:\s*Bearer\s+)[^\s"']+/gi,
  /([?&](?:token|access_token)=)[^&\s"']+/gi,
];

export function redact(text: string): string {
  let out = text;
  for (const s of known) out = out.split(s).join('***');
  out = out.replace(TOKEN_PATTERNS[0]!, 'hf_***');
  out = out.replace(TOKEN_PATTERNS[1]!, '$1***');
  out = out.replace(TOKEN_PATTERNS[2]!, '$1***');
  return out;
}

/** Deep-redacts every string in a JSON-like value. */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v)) as T;
  if (value && typeof value === 'object' && !(ArrayBuffer.isView(value))) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v);
    return out as T;
  }
  return value;
}
