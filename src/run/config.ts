/**
 * Resolves the configuration of `apex run`: schema defaults, then the embedded default (when
 * there is no config file) or the config file, then `key=value` overrides; every key checked,
 * every problem collected and reported at once (exit 2) before any heavy work.
 */
import { existsSync, statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { FileTooLargeError, readBoundedText } from '../io/bounded-read.js';
import path from 'node:path';
import { LineCounter, isMap, isScalar, parseDocument, type Node as YamlNode } from 'yaml';
import { InputError, UsageError } from '../errors.js';
import { expandHome } from '../io/hf-cache.js';
import { parseRepoArgument } from '../io/resolve-model.js';
import { didYouMean } from '../util/did-you-mean.js';
import { applyRunRules } from './config-rules.js';
import { BUILTIN_PREFIX, CONFIG_SCHEMA, type LeafNode, type ResolvedConfig } from './config-schema.js';
import { embeddedDefaultConfig } from './default-config.js';
import {
  checkValue,
  emptyCheckResult,
  expectation,
  formatProblem,
  keysOf,
  nodeAtPath,
  schemaLeaves,
  type CheckResult,
  type ConfigProblem,
  type Locator,
} from './schema-check.js';

/** Where a resolved value came from. */
export type ConfigSource = 'default' | 'file' | 'override';

export interface ResolvedRunConfig {
  readonly config: ResolvedConfig;
  /** Source of every key, by dotted path (`stages.count`). */
  readonly sources: Readonly<Record<string, ConfigSource>>;
  /** The config file as given, or null for the embedded default. */
  readonly file: string | null;
}

export interface ResolveConfigOptions {
  /** A YAML config file; without one the embedded default applies. */
  readonly file?: string;
  /** `key=value` overrides, applied in order after the file. */
  readonly overrides?: readonly string[];
  /** Folder that relative paths from defaults and overrides are resolved against. */
  readonly cwd: string;
}

/** Every problem of a config at once, one line each, naming the key path (exit 2). */
export class ConfigValidationError extends UsageError {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[]) {
    const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
    super(`invalid configuration (${count}):\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`, 'CONFIG_INVALID');
    this.problems = problems;
  }
}

/** Config files are a few kilobytes; anything this large is not one. */
const MAX_CONFIG_BYTES = 1 << 20;

/** One source of values: its checked leaves, the folder its relative paths start from, and where its keys were written. */
interface Layer {
  readonly source: ConfigSource;
  readonly baseDir: string;
  readonly check: CheckResult;
  readonly locate: Locator;
}

const LEAVES = schemaLeaves(CONFIG_SCHEMA);

function defaultsLayer(cwd: string): Layer {
  const check = emptyCheckResult();
  for (const { path: key, node } of LEAVES) {
    if (node.default !== undefined) check.leaves.set(key, node.default);
  }
  return { source: 'default', baseDir: cwd, check, locate: () => undefined };
}

function embeddedLayer(cwd: string): Layer {
  const check = emptyCheckResult();
  const locate = (): string => 'embedded default';
  checkValue(CONFIG_SCHEMA, CONFIG_SCHEMA, embeddedDefaultConfig(), '', check, locate);
  return { source: 'default', baseDir: cwd, check, locate };
}

/** The first line of a yaml error, without the position the message repeats. */
function yamlMessage(message: string): string {
  return (message.split('\n')[0] ?? message).replace(/ at line \d+, column \d+:?$/, '');
}

interface OddKey {
  readonly path: string;
  readonly line: number;
  readonly got: string;
}

/** A map key for key segments; JSON keeps `['a.b']` and `['a', 'b']` apart. */
function keyId(keys: readonly string[]): string {
  return JSON.stringify(keys);
}

/**
 * Line of every key in the document, by its segments as written (`keyId`); keys that are not
 * names (`~:`, `[a, b]:`, `{a: 1}:`) go to `odd` with where they were written.
 */
function keyLines(node: YamlNode | null, keys: readonly string[], lines: LineCounter, out: Map<string, number>, odd: OddKey[]): void {
  if (!isMap(node)) return;
  for (const pair of node.items) {
    const keyNode = pair.key as YamlNode | null;
    const value = pair.value as YamlNode | null;
    const line = lines.linePos(keyNode?.range?.[0] ?? value?.range?.[0] ?? 0).line;
    const name = isScalar(keyNode) && (typeof keyNode.value === 'string' || typeof keyNode.value === 'number') ? String(keyNode.value) : '';
    if (name === '') {
      const got = keyNode === null || (isScalar(keyNode) && (keyNode.value === null || keyNode.value === '')) ? 'an empty key' : isMap(keyNode) ? 'a mapping' : isScalar(keyNode) ? String(keyNode.value) : 'a list';
      odd.push({ path: keys.join('.'), line, got });
      continue;
    }
    out.set(keyId([...keys, name]), line);
    keyLines(value, [...keys, name], lines, out, odd);
  }
}

/** " (did you mean …?)" naming the closest file next to a missing config file (run.yml for run.yaml), or ''. */
async function nearbyFile(file: string, absolute: string): Promise<string> {
  let names: string[];
  try {
    names = (await readdir(path.dirname(absolute), { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
  } catch {
    return '';
  }
  const near = didYouMean(path.basename(absolute), names);
  return near === undefined ? '' : ` (did you mean ${path.join(path.dirname(file), near)}?)`;
}

/** The text of a config file; InputError (exit 3) when it cannot be read, UsageError when it is far too large to be one. */
async function readConfigText(file: string, absolute: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(absolute)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new InputError(`config file ${file}: no such file (${absolute})${await nearbyFile(file, absolute)}`, 'CONFIG_UNREADABLE', { cause: err });
    }
    throw new InputError(`config file ${file}: ${(err as Error).message}`, 'CONFIG_UNREADABLE', { cause: err });
  }
  if (size > MAX_CONFIG_BYTES) throw new UsageError(`config file ${file} is ${size} bytes; a config file is a few kilobytes`, 'CONFIG_INVALID');
  try {
    // Bounded: a device (/dev/zero) has size 0 and would be read without end, a pipe has no size.
    return await readBoundedText(absolute, MAX_CONFIG_BYTES, 'CONFIG_UNREADABLE');
  } catch (err) {
    // A pipe over the limit is too large like a file over it (exit 2); the reader's messages
    // start with the path, which this one already names.
    if (err instanceof FileTooLargeError) {
      throw new UsageError(`config file ${file} is more than ${MAX_CONFIG_BYTES} bytes; a config file is a few kilobytes`, 'CONFIG_INVALID');
    }
    const message = (err as Error).message;
    throw new InputError(`config file ${file}: ${message.startsWith(`${absolute}: `) ? message.slice(absolute.length + 2) : message}`, 'CONFIG_UNREADABLE', { cause: err });
  }
}

const MAX_YAML_ERRORS = 5;

async function fileLayer(file: string, cwd: string, problems: ConfigProblem[]): Promise<Layer> {
  const absolute = path.resolve(cwd, file);
  const check = emptyCheckResult();
  const layer: Layer = { source: 'file', baseDir: path.dirname(absolute), check, locate: () => file };
  const text = await readConfigText(file, absolute);
  const lineCounter = new LineCounter();
  // logLevel 'error': the library's own warnings (e.g. about keys that are lists) would go to stderr past apex.
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, logLevel: 'error' });
  if (doc.errors.length > 0) {
    // The first few say where the text stops being YAML; a file that is not YAML at all (a
    // JSONL data file passed by mistake) would otherwise list hundreds.
    for (const e of doc.errors.slice(0, MAX_YAML_ERRORS)) {
      const pos = e.linePos?.[0];
      problems.push({ path: '', where: pos ? `${file}:${pos.line}:${pos.col}` : file, message: `YAML syntax error: ${yamlMessage(e.message)}` });
    }
    if (doc.errors.length > MAX_YAML_ERRORS) {
      problems.push({ path: '', where: file, message: `${doc.errors.length - MAX_YAML_ERRORS} more YAML syntax errors not shown (is ${file} a YAML config?)` });
    }
    for (const leaf of LEAVES) check.failed.add(leaf.path); // unknown content: no "required" noise
    return layer;
  }
  const lines = new Map<string, number>();
  const odd: OddKey[] = [];
  keyLines(doc.contents as YamlNode | null, [], lineCounter, lines, odd);
  if (odd.length > 0) {
    for (const k of odd) problems.push({ path: k.path, where: `${file}:${k.line}`, message: `a key must be a name, got ${k.got}` });
    for (const leaf of LEAVES) check.failed.add(leaf.path);
    return layer;
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    problems.push({ path: '', where: file, message: `YAML error: ${(err as Error).message}` });
    for (const leaf of LEAVES) check.failed.add(leaf.path);
    return layer;
  }
  const written = (keys: readonly string[]): string | undefined => {
    const line = lines.get(keyId(keys));
    return line === undefined ? undefined : `${file}:${line}`;
  };
  // The key itself, else the closest enclosing key that was written (a key reached through an alias).
  const locate: Locator = Object.assign(
    (keys: readonly string[]): string => {
      for (let n = keys.length; n > 0; n--) {
        const at = written(keys.slice(0, n));
        if (at !== undefined) return at;
      }
      return file;
    },
    { written },
  );
  checkValue(CONFIG_SCHEMA, CONFIG_SCHEMA, value, '', check, locate);
  problems.push(...check.problems);
  return { ...layer, locate };
}

/** Parses `key=value` (value as YAML: scalars, `[a, b]`, `{k: v}`; empty means null). */
function overridesLayer(overrides: readonly string[], cwd: string, problems: ConfigProblem[]): Layer {
  const check = emptyCheckResult();
  const origin = new Map<string, string>();
  for (const text of overrides) {
    const where = `override '${text}'`;
    const eq = text.indexOf('=');
    const key = eq > 0 ? text.slice(0, eq).trim() : '';
    if (key === '' || /\s/.test(key)) {
      problems.push({ path: '', where, message: 'expected key=value, e.g. stages.count=3 or data.train=[a.txt,b.txt]' });
      continue;
    }
    const found = nodeAtPath(CONFIG_SCHEMA, key, where);
    if ('problem' in found) {
      problems.push(found.problem);
      continue;
    }
    const valueText = text.slice(eq + 1);
    const doc = parseDocument(valueText, { uniqueKeys: true });
    if (doc.errors.length > 0) {
      problems.push({ path: key, where, message: `value is not valid YAML (${yamlMessage(doc.errors[0]!.message)}); quote it` });
      continue;
    }
    let value: unknown = null;
    try {
      if (valueText.trim() !== '') value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      // Unresolved aliases and alias bombs surface only here, as for a file.
      problems.push({ path: key, where, message: `value is not valid YAML (${yamlMessage((err as Error).message)}); quote it` });
      continue;
    }
    const single = emptyCheckResult();
    checkValue(CONFIG_SCHEMA, found.node, value, key, single, () => where);
    problems.push(...single.problems);
    for (const section of single.cleared) {
      check.cleared.add(section);
      for (const leaf of [...check.leaves.keys()].filter((k) => k.startsWith(`${section}.`))) {
        check.leaves.delete(leaf);
        check.failed.delete(leaf);
        origin.delete(leaf);
      }
    }
    for (const [leaf, v] of single.leaves) {
      check.leaves.set(leaf, v);
      origin.set(leaf, where);
    }
    for (const leaf of single.failed) check.failed.add(leaf);
  }
  return { source: 'override', baseDir: cwd, check, locate: (keys) => origin.get(keys.join('.')) };
}

/**
 * The last layer that sets `key`; when a later layer cleared the key's section (`structured=`),
 * the defaults layer, so that the section's keys count as not written.
 */
function layerFor(layers: readonly Layer[], key: string): Layer | undefined {
  const clears = (l: Layer) => [...l.check.cleared].some((section) => key.startsWith(`${section}.`));
  const last = layers.findLast((l) => l.check.leaves.has(key) || clears(l));
  if (last === undefined || last.check.leaves.has(key)) return last;
  const defaults = layers[0]!;
  return defaults.check.leaves.has(key) ? defaults : undefined;
}

function resolvePath(value: string, baseDir: string): string {
  return path.resolve(baseDir, expandHome(value));
}

/**
 * A local folder resolved to an absolute path, or a Hub id `org/name[@rev]` kept as written;
 * the same reading as the model argument of every command (src/io/resolve-model.ts).
 */
function resolveModel(value: string, baseDir: string, cwd: string): { value: string } | { problem: string } {
  const looksLikePath = /^(\.{1,2}([/\\]|$)|[/\\~])/.test(value);
  if (looksLikePath || existsSync(path.resolve(baseDir, value))) return { value: resolvePath(value, baseDir) };
  try {
    parseRepoArgument(value);
    // Shaped like a Hub id, but the model argument's rule (resolve-model.ts) reads it as a local
    // path when its first part is a folder, relative to the current directory: a config file
    // would then mean a different model depending on where it is run.
    const first = value.split('/')[0]!;
    const isDir = (p: string) => { try { return statSync(p).isDirectory(); } catch { return false; } };
    if (isDir(path.resolve(baseDir, first))) {
      return { problem: `no such model folder ${path.resolve(baseDir, value)} (a path in a config file is relative to the file's folder)` };
    }
    if (path.resolve(baseDir) !== path.resolve(cwd) && isDir(path.resolve(cwd, first))) {
      return {
        problem: `'${value}' is not a folder next to the config file (${path.resolve(baseDir, value)}; paths in a config file are relative to its folder), but would be read as ${path.resolve(cwd, value)} from the current directory: ` +
          'write the path relative to the config file (starting with ./ or ../) or absolute; a Hub id of that name needs another current directory',
      };
    }
    return { value };
  } catch {
    return { problem: `'${value}' is neither an existing folder nor a Hub id org/name[@revision] (start a local path with ./)` };
  }
}

/** The leaf with its paths resolved, or why it cannot be. */
function resolveLeaf(node: LeafNode, value: unknown, baseDir: string, cwd: string): { value: unknown } | { problem: string } {
  if (value === null) return { value };
  if (node.kind === 'path') return node.role === 'model' ? resolveModel(value as string, baseDir, cwd) : { value: resolvePath(value as string, baseDir) };
  if (node.kind === 'sources') return { value: (value as string[]).map((s) => (s.startsWith(BUILTIN_PREFIX) ? s : resolvePath(s, baseDir))) };
  return { value };
}

function getAt(source: Record<string, unknown>, keyPath: string): unknown {
  let value: unknown = source;
  for (const key of keyPath.split('.')) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined;
  return value;
}

function setAt(target: Record<string, unknown>, keyPath: string, value: unknown): void {
  const keys = keyPath.split('.');
  let obj = target;
  for (const key of keys.slice(0, -1)) {
    obj[key] ??= {};
    obj = obj[key] as Record<string, unknown>;
  }
  obj[keys[keys.length - 1]!] = value;
}

/**
 * The resolved config: every default filled, paths absolute (relative to the config file's
 * folder for values from the file, to `cwd` for defaults and overrides), contradictions
 * checked. Throws ConfigValidationError listing every problem, or InputError when the file
 * cannot be read.
 */
export async function resolveConfig(options: ResolveConfigOptions): Promise<ResolvedRunConfig> {
  const { cwd } = options;
  const problems: ConfigProblem[] = [];
  const layers: Layer[] = [defaultsLayer(cwd)];
  if (options.file === undefined) {
    const embedded = embeddedLayer(cwd);
    problems.push(...embedded.check.problems);
    layers.push(embedded);
  } else {
    layers.push(await fileLayer(options.file, cwd, problems));
  }
  const overrides = overridesLayer(options.overrides ?? [], cwd, problems);
  layers.push(overrides);

  const config: Record<string, unknown> = {};
  const sources: Record<string, ConfigSource> = {};
  const failed = new Set(layers.flatMap((l) => [...l.check.failed]));
  const locators = new Map<string, Locator>();
  for (const { path: key, node } of LEAVES) {
    const layer = layerFor(layers, key);
    if (layer === undefined) {
      if (!failed.has(key)) {
        problems.push({ path: key, message: `is required: ${expectation(node)}`, where: options.file });
      }
      failed.add(key);
      setAt(config, key, node.kind === 'sources' ? [] : '');
      sources[key] = 'default';
      continue;
    }
    const leaf = resolveLeaf(node, layer.check.leaves.get(key), layer.baseDir, options.cwd);
    if ('problem' in leaf) {
      problems.push({ path: key, message: leaf.problem, where: layer.locate(keysOf(key)) });
      failed.add(key);
    }
    setAt(config, key, 'value' in leaf ? leaf.value : layer.check.leaves.get(key));
    sources[key] = layer.source;
    locators.set(key, layer.locate);
  }

  const resolved = config as unknown as ResolvedConfig;
  problems.push(
    ...applyRunRules(resolved, {
      explicit: (key) => sources[key] === 'file' || sources[key] === 'override',
      failed: (key) => failed.has(key),
      // A key nobody wrote (a rule's "is required") is the config file's problem.
      locate: (key) => locators.get(key)?.(keysOf(key)) ?? options.file,
    }),
  );
  if (problems.length > 0) throw new ConfigValidationError(problems);
  // A key written as null whose value the rules derived (`lora.alpha=` → 2 · rank) is a default, not what was written.
  for (const { path: key } of LEAVES) {
    if (sources[key] !== 'default' && layerFor(layers, key)?.check.leaves.get(key) === null && getAt(resolved as unknown as Record<string, unknown>, key) != null) {
      sources[key] = 'default';
    }
  }
  return { config: resolved, sources, file: options.file ?? null };
}
