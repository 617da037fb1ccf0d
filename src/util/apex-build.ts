/**
 * Which build of apex is running: sha256 over its own modules as they run (dist/**\/*.js from an
 * install, src/**\/*.ts under tsx or vitest), each with its path. package.json's version does not
 * move with every change, so records that say which apex made them (run.json, a stage's
 * apex_run.json, operator files, summary.json) carry this too, and a run continued by another
 * build says so.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The first 12 hex digits of the build digest, computed once per process (about 15 ms); 'unknown'
 * when the modules cannot be read (a record is still written, it just cannot tell builds apart).
 */
export function apexBuild(): string {
  if (cached !== undefined) return cached;
  try {
    const self = fileURLToPath(import.meta.url);
    // This module is <root>/dist/util/apex-build.js or <root>/src/util/apex-build.ts.
    const root = dirname(dirname(self));
    const ext = extname(self);
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        // Editors' lock and backup files (.#x.ts) are no module; neither are declarations.
        if (e.name.startsWith('.')) continue;
        const path = join(dir, e.name);
        if (e.isDirectory()) walk(path);
        else if (e.isFile() && e.name.endsWith(ext) && !e.name.endsWith(`.d${ext}`)) files.push(path);
      }
    };
    walk(root);
    const names = files.map((f) => relative(root, f).split(sep).join('/')).sort();
    const hash = createHash('sha256');
    for (const name of names) hash.update(name).update('\0').update(readFileSync(join(root, name))).update('\0');
    cached = hash.digest('hex').slice(0, 12);
  } catch {
    cached = 'unknown';
  }
  return cached;
}
