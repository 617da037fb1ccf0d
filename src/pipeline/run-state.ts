/**
 * The state of an `apex run` folder between invocations: `<run>/run.json` records the resolved
 * config, its hash and every piece of work already completed (evaluations, the analysis, each
 * stage, the baseline) with its result. A rerun with the same config skips what is complete
 * (the same config as the hash sees it: results-neutral keys such as eval.batch_size may change,
 * and run.json then records the new values); one with a different config is refused unless
 * `--force` starts over. A piece counts as done
 * only when its record is present AND its final files still exist on disk.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { fsyncDir } from '../io/safetensors-writer.js';
import { ioError } from '../io/io-error.js';
import { canonicalJson, configHash, RESULTS_NEUTRAL_KEYS } from '../run/config-format.js';
import { CONFIG_SCHEMA, type ResolvedConfig } from '../run/config-schema.js';

export const RUN_STATE_FORMAT = 'apex.run-state/1';
export const RUN_STATE_FILE = 'run.json';

/** One completed piece of work: when it finished, how long it took, and what it produced. */
export interface CompletedStep<R = unknown> {
  readonly finishedAt: string;
  readonly wallSeconds: number;
  readonly result: R;
}

export interface RunStateFile {
  readonly format: typeof RUN_STATE_FORMAT;
  readonly configHash: string;
  readonly config: ResolvedConfig;
  readonly apexVersion: string;
  readonly createdAt: string;
  /** Completed pieces by key (`eval/before`, `analysis`, `apex/stage/1`, …). */
  readonly steps: Record<string, CompletedStep>;
}

/** How a run folder was found when the run started. */
export type RunStart = 'new' | 'resumed' | 'restarted';

/** A results-neutral key (RESULTS_NEUTRAL_KEYS) whose value differs from the one in run.json. */
export interface NeutralChange {
  readonly key: string;
  readonly then: unknown;
  readonly now: unknown;
  /** Why the change does not change the run's results. */
  readonly why: string;
}

/** Writes JSON so that a reader sees the old or the new file, never half of one. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const h = await open(tmp, 'wx');
    try {
      await h.writeFile(`${JSON.stringify(value, null, 2)}\n`);
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, path);
    await fsyncDir(dirname(path));
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw ioError(path, 'write', e);
  }
}

/** Dotted paths of the leaves whose values differ between two configs (for the refusal message). */
export function changedKeys(a: unknown, b: unknown, prefix = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return canonicalJson(a ?? null) === canonicalJson(b ?? null) ? [] : [prefix || '(root)'];
}

/**
 * The record of one run folder. `open` decides, before any heavy work, whether the folder is
 * new, a resumable run of the same config, or something that must not be touched.
 */
export class RunState {
  private constructor(
    readonly dir: string,
    private file: RunStateFile,
    readonly start: RunStart,
    /** Resumed under other values of results-neutral keys than run.json held (now recorded there). */
    readonly neutralChanges: readonly NeutralChange[] = [],
  ) {}

  /** The apex version that began the run. */
  get apexVersion(): string {
    return this.file.apexVersion;
  }

  get configHash(): string {
    return this.file.configHash;
  }

  get createdAt(): string {
    return this.file.createdAt;
  }

  /**
   * Opens (or creates) the run folder for `config`. Call with the folder's lock held. With
   * `force`, an existing folder is moved aside in one rename and deleted, and the run starts
   * from scratch. Refuses (UsageError, exit 2) a folder holding another config's run, or
   * anything that is not an apex run.
   */
  static async open(dir: string, config: ResolvedConfig, options: { force: boolean; apexVersion: string }): Promise<RunState> {
    const out = resolve(dir);
    const hash = configHash(config);
    const existing = await readExisting(out);
    let start: RunStart = 'new';
    if (existing.kind === 'run' && recordedHash(existing.state) === hash && !options.force) {
      const recorded = existing.state;
      const changes = neutralChanges(recorded.config, config);
      const state = new RunState(out, recorded, 'resumed', changes);
      // run.json holds the values the run goes on with (the hash too: a record of an apex that
      // hashed every key gets the hash the run is known by now).
      if (recorded.configHash !== hash || canonicalJson(recorded.config) !== canonicalJson(config)) {
        state.file = { ...recorded, configHash: hash, config };
        await state.save();
      }
      return state;
    }
    if (existing.kind !== 'absent') {
      if (!options.force) throw refusal(out, existing, config);
      await discardFolder(out);
      start = 'restarted';
    }
    await mkdir(out, { recursive: true }).catch((e: unknown) => { throw ioError(out, 'create the run folder', e); });
    const now = new Date().toISOString();
    const file: RunStateFile = { format: RUN_STATE_FORMAT, configHash: hash, config, apexVersion: options.apexVersion, createdAt: now, steps: {} };
    const state = new RunState(out, file, start);
    await state.save();
    return state;
  }

  /**
   * What `open` would do with the folder, without writing anything (a dry run): start a new run,
   * resume this config's run (with its record of completed steps and the results-neutral keys
   * changed since), or throw the error `open` would (with `force` the folder would be discarded).
   */
  static async peek(dir: string, config: ResolvedConfig, options: { force: boolean }): Promise<{ start: RunStart; steps: Readonly<Record<string, CompletedStep<unknown>>>; neutralChanges: readonly NeutralChange[] }> {
    const out = resolve(dir);
    const existing = await readExisting(out);
    if (existing.kind === 'absent') return { start: 'new', steps: {}, neutralChanges: [] };
    if (options.force) return { start: 'restarted', steps: {}, neutralChanges: [] };
    if (existing.kind === 'run' && recordedHash(existing.state) === configHash(config)) {
      return { start: 'resumed', steps: existing.state.steps, neutralChanges: neutralChanges(existing.state.config, config) };
    }
    throw refusal(out, existing, config);
  }

  /** The record of a completed step, if it is recorded and `stillThere` (its final files exist). */
  completed<R>(key: string, stillThere: () => boolean = () => true): CompletedStep<R> | undefined {
    const step = this.file.steps[key] as CompletedStep<R> | undefined;
    return step !== undefined && stillThere() ? step : undefined;
  }

  /** Records a completed step (written to disk before this returns). */
  async complete<R>(key: string, wallSeconds: number, result: R): Promise<CompletedStep<R>> {
    const step: CompletedStep<R> = { finishedAt: new Date().toISOString(), wallSeconds, result };
    this.file = { ...this.file, steps: { ...this.file.steps, [key]: step } };
    await this.save();
    return step;
  }

  /** Forgets a step whose files went missing, and everything recorded after it. */
  async forgetFrom(key: string): Promise<void> {
    const keys = Object.keys(this.file.steps);
    const at = keys.indexOf(key);
    if (at < 0) return;
    const steps = Object.fromEntries(keys.slice(0, at).map((k) => [k, this.file.steps[k]!]));
    this.file = { ...this.file, steps };
    await this.save();
  }

  private save(): Promise<void> {
    return writeJsonAtomic(join(this.dir, RUN_STATE_FILE), this.file);
  }
}

/**
 * The hash of the config run.json records, computed again: a record written by an apex whose
 * hash also covered the results-neutral keys still matches the same config.
 */
function recordedHash(recorded: RunStateFile): string {
  const config: unknown = recorded.config;
  return config !== null && typeof config === 'object' && !Array.isArray(config) ? configHash(recorded.config) : recorded.configHash;
}

/** The schema's default of a dotted key (undefined for a key it does not know). */
function schemaDefault(key: string): unknown {
  let node: unknown = CONFIG_SCHEMA;
  for (const k of key.split('.')) node = (node as { properties?: Record<string, unknown> } | undefined)?.properties?.[k];
  return (node as { default?: unknown } | undefined)?.default;
}

function neutralChanges(recorded: ResolvedConfig, config: ResolvedConfig): NeutralChange[] {
  const at = (c: unknown, key: string): unknown => key.split('.').reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), c);
  // A key the recorded config lacks (written before the key existed) had its default then.
  return Object.entries(RESULTS_NEUTRAL_KEYS)
    .map(([key, why]) => {
      // Only an absent key takes the default: a recorded null (checkpoint.every: null) is a value.
      const then = at(recorded, key);
      return { key, then: then === undefined ? (schemaDefault(key) ?? null) : then, now: at(config, key) ?? null, why };
    })
    .filter((c) => canonicalJson(c.then) !== canonicalJson(c.now));
}

type Existing =
  | { kind: 'absent' }
  | { kind: 'run'; state: RunStateFile }
  | { kind: 'other'; entries: string[] };

async function readExisting(out: string): Promise<Existing> {
  let entries: string[];
  try {
    if (!(await stat(out)).isDirectory()) throw new UsageError(`output ${out} exists and is not a folder`, 'OUTPUT_EXISTS');
    entries = await readdir(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw e;
  }
  if (entries.length === 0) return { kind: 'absent' };
  const statePath = join(out, RUN_STATE_FILE);
  if (!existsSync(statePath)) return { kind: 'other', entries };
  let parsed: Partial<RunStateFile>;
  try {
    parsed = JSON.parse(await readFile(statePath, 'utf8')) as Partial<RunStateFile>;
  } catch (e) {
    throw new InputError(`${statePath}: unreadable run record (${(e as Error).message}); pass --force to start the run over`, 'RUN_STATE_UNREADABLE');
  }
  if (parsed.format !== RUN_STATE_FORMAT || typeof parsed.configHash !== 'string' || typeof parsed.steps !== 'object' || parsed.steps === null) {
    throw new InputError(`${statePath}: not an ${RUN_STATE_FORMAT} run record; pass --force to start the run over`, 'RUN_STATE_UNREADABLE');
  }
  return { kind: 'run', state: parsed as RunStateFile };
}

function refusal(out: string, existing: Exclude<Existing, { kind: 'absent' }>, config: ResolvedConfig): UsageError {
  if (existing.kind === 'other') {
    return new UsageError(
      `output ${out} is not empty and holds no apex run (no ${RUN_STATE_FILE}); choose another folder with -o, or pass --force to delete it and start a run there`,
      'OUTPUT_EXISTS',
    );
  }
  // Only what makes it another run; a results-neutral key changed alongside is not the reason.
  const changed = changedKeys(existing.state.config, config).filter((k) => k !== 'output' && !Object.hasOwn(RESULTS_NEUTRAL_KEYS, k));
  const list = changed.length > 0 ? `: ${changed.slice(0, 8).join(', ')}${changed.length > 8 ? `, and ${changed.length - 8} more` : ''}` : '';
  return new UsageError(
    `run folder ${out} holds a run of a different config (config hash ${recordedHash(existing.state).slice(0, 16)}, now ${configHash(config).slice(0, 16)}; changed${list}). ` +
      'Rerun with the same config to resume it, choose another folder with -o, or pass --force to discard it and start over.',
    'RUN_CONFIG_CHANGED',
  );
}

/**
 * Moves the folder aside in one rename (so it is never half-deleted under its own name), then
 * deletes it. The aside name is a `.tmp-` one, not `.old-`: a process killed while deleting
 * leaves a half-deleted folder that the stale sweep must remove, not put back (stale-temps.ts).
 */
async function discardFolder(out: string): Promise<void> {
  const aside = join(dirname(out), `${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await rename(out, aside).catch((e: unknown) => { throw ioError(out, 'move the previous run aside', e); });
  await fsyncDir(dirname(out));
  await rm(aside, { recursive: true, force: true });
}
