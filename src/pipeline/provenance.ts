/**
 * `apex_run.json`: the provenance record every apex command that writes results leaves next to
 * them — apex version, the command line, seed, input and output files with their sha256, phase
 * timings, peak memory and the compute backend. Commands start a recorder when they begin,
 * time their phases through it, and write the record last (atomically, fsync'd), so a reader
 * can tell exactly what produced a folder. Everything in it is redacted: tokens never reach it.
 *
 * Field contract shared with the trainer (src/train) and `apex run`: `base_model` is the model
 * argument the whole run started from (a Hub id `org/name[@rev]` or a local folder, whatever
 * resolveModel accepts). `apex expand --run` reads it from `<run>/stages/1/apex_run.json` to
 * find stage 1's input, and every fused checkpoint carries it forward in its own record.
 */
import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { apexVersion } from './analysis-provenance.js';
import { fsyncDir } from '../io/safetensors-writer.js';
import { ioError } from '../io/io-error.js';
import { redactDeep } from '../util/secrets.js';

export const PROVENANCE_FILE = 'apex_run.json';
export const PROVENANCE_SCHEMA = 'apex-run/1';

/** A file read or written, by name relative to the folder it belongs to. */
export interface FileRecord {
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface FileSetRecord {
  /** The folder (or file) as apex resolved it. */
  readonly path: string;
  readonly files: readonly FileRecord[];
}

export interface RunProvenance {
  readonly schema: typeof PROVENANCE_SCHEMA;
  readonly apex_version: string;
  /** e.g. `expand`, `finetune`. */
  readonly command: string;
  /** Command-line arguments as given (redacted). */
  readonly argv: readonly string[];
  readonly seed: number | null;
  readonly started_at: string;
  readonly finished_at: string;
  /** Seconds per phase, plus `total`. */
  readonly timings: Readonly<Record<string, number>>;
  /** Peak resident set size of the process (process.resourceUsage().maxRSS), bytes. */
  readonly peak_rss_bytes: number;
  /** CPU time of the process so far (user, system), seconds: comparable across machine loads where wall time is not. */
  readonly cpu_seconds: { readonly user: number; readonly system: number };
  /** TensorFlow.js backend, for commands that compute with one; null otherwise. */
  readonly backend: { readonly name: string; readonly detail?: string } | null;
  readonly node_version: string;
  readonly platform: string;
  /** The model argument the run started from (see the field contract above). */
  readonly base_model?: string;
  readonly inputs: Readonly<Record<string, FileSetRecord>>;
  readonly outputs: Readonly<Record<string, FileSetRecord>>;
  /** Command-specific settings and results. */
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface ProvenanceFields {
  seed?: number | null;
  backend?: RunProvenance['backend'];
  base_model?: string;
  inputs?: Record<string, FileSetRecord>;
  outputs?: Record<string, FileSetRecord>;
  details?: Record<string, unknown>;
}

/** Times phases from the moment a command starts and builds its record at the end. */
export class ProvenanceRecorder {
  private readonly startedAt = new Date();
  private readonly start = performance.now();
  private readonly timings: Record<string, number> = {};

  constructor(readonly command: string, readonly argv: readonly string[]) {}

  /** Runs `fn`, adding its duration to the phase `name`. */
  async time<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.add(name, (performance.now() - t0) / 1000);
    }
  }

  /** Adds seconds to a phase (for work spread over callbacks). */
  add(name: string, seconds: number): void {
    this.timings[name] = (this.timings[name] ?? 0) + seconds;
  }

  elapsedSeconds(): number {
    return (performance.now() - this.start) / 1000;
  }

  /** Seconds per phase so far, plus `total`, rounded to milliseconds. */
  timingsSoFar(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.timings)) out[k] = round3(v);
    out.total = round3(this.elapsedSeconds());
    return out;
  }

  build(fields: ProvenanceFields = {}): RunProvenance {
    return redactDeep({
      schema: PROVENANCE_SCHEMA,
      apex_version: apexVersion(),
      command: this.command,
      argv: [...this.argv],
      seed: fields.seed ?? null,
      started_at: this.startedAt.toISOString(),
      finished_at: new Date().toISOString(),
      timings: this.timingsSoFar(),
      peak_rss_bytes: peakRssBytes(),
      cpu_seconds: cpuSeconds(),
      backend: fields.backend ?? null,
      node_version: process.versions.node,
      platform: `${platform()}/${arch()}`,
      ...(fields.base_model !== undefined ? { base_model: fields.base_model } : {}),
      inputs: fields.inputs ?? {},
      outputs: fields.outputs ?? {},
      ...(fields.details ? { details: fields.details } : {}),
    });
  }
}

/** Peak RSS of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** User and system CPU time of this process so far, in seconds. */
export function cpuSeconds(): { user: number; system: number } {
  const u = process.resourceUsage();
  return { user: round3(u.userCPUTime / 1e6), system: round3(u.systemCPUTime / 1e6) };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Writes `apex_run.json` into `dir` atomically (temp file, fsync, rename, fsync folder). */
export async function writeProvenance(dir: string, record: RunProvenance): Promise<string> {
  const path = join(dir, PROVENANCE_FILE);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const h = await open(tmp, 'w').catch((e: unknown) => { throw ioError(tmp, 'create', e); });
    try {
      await h.writeFile(`${JSON.stringify(record, null, 2)}\n`).catch((e: unknown) => { throw ioError(tmp, 'write', e); });
      await h.sync().catch((e: unknown) => { throw ioError(tmp, 'fsync', e); });
    } finally {
      await h.close();
    }
    await rename(tmp, path).catch((e: unknown) => { throw ioError(path, 'rename', e); });
    await fsyncDir(dirname(path));
    return path;
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}

/** Reads a string field of an `apex_run.json`, or undefined when the file or field is absent. */
export function provenanceString(record: unknown, field: 'base_model'): string | undefined {
  if (!record || typeof record !== 'object') return undefined;
  const v = (record as Record<string, unknown>)[field];
  return typeof v === 'string' && v !== '' ? v : undefined;
}
