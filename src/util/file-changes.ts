/** A file named in a record with its content hash. */
export interface HashedFile {
  readonly file: string;
  readonly sha256: string;
}

/**
 * The files whose content (sha256) or presence differs between an earlier record and now, said
 * for a message: "x is new", "x is gone", "x (sha256 abc… then, def… now)". `then` names the
 * earlier moment ("then", "when trained").
 */
export function fileChanges(before: readonly HashedFile[], now: readonly HashedFile[], then = 'then'): string[] {
  const old = new Map(before.map((f) => [f.file, f.sha256]));
  const cur = new Map(now.map((f) => [f.file, f.sha256]));
  const changed: string[] = [];
  for (const [file, sha] of cur) {
    const was = old.get(file);
    if (was === undefined) changed.push(`${file} is new`);
    else if (was !== sha) changed.push(`${file} (sha256 ${was.slice(0, 12)}… ${then}, ${sha.slice(0, 12)}… now)`);
  }
  for (const file of old.keys()) if (!cur.has(file)) changed.push(`${file} is gone`);
  return changed;
}
