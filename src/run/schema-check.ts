/**
 * Checks a parsed YAML value against a schema tree (config-schema.ts), collecting every
 * problem instead of stopping at the first, and flattens what is valid into leaf values keyed
 * by dotted path (`stages.count`). Knows nothing about `apex run` itself.
 */
import { parseByteSize } from '../io/byte-size.js';
import { BUILTIN_CORPORA, isBuiltinCorpus } from '../train/data-corpus.js';
import { didYouMean } from '../util/did-you-mean.js';
import { parseCount } from '../util/token-count.js';
import { BUILTIN_PREFIX, type IntegerNode, type LeafNode, type NumberNode, type ObjectNode, type SchemaNode } from './config-schema.js';

/** One thing wrong with a config, named by its key path; `where` is `file:line` or the override text. */
export interface ConfigProblem {
  readonly path: string;
  readonly message: string;
  readonly where?: string;
}

export function formatProblem(problem: ConfigProblem): string {
  const head = problem.path === '' ? '' : `${problem.path}: `;
  return `${problem.where !== undefined ? `${problem.where}: ` : ''}${head}${problem.message}`;
}

/** Valid leaf values (normalised: a single source becomes a list, sizes become bytes), failed paths, problems. */
export interface CheckResult {
  readonly leaves: Map<string, unknown>;
  readonly failed: Set<string>;
  readonly problems: ConfigProblem[];
  /** Sections written as null: they reset every key below them to its default. */
  readonly cleared: Set<string>;
}

export function emptyCheckResult(): CheckResult {
  return { leaves: new Map(), failed: new Set(), problems: [], cleared: new Set() };
}

/**
 * Names where a key was written (file line or override), for messages. A key is given by its
 * segments as written: a file's top-level `optimizer.lr:` is the one key `['optimizer.lr']`,
 * not `['optimizer', 'lr']`, so the dotted and the nested spelling are told apart.
 */
export interface Locator {
  (keys: readonly string[]): string | undefined;
  /** Where exactly these keys were written, without falling back to an enclosing key. */
  readonly written?: (keys: readonly string[]) => string | undefined;
}

/** Segments of a schema path; schema names hold no dots, so the split is exact. */
export function keysOf(path: string): string[] {
  return path === '' ? [] : path.split('.');
}

export function joinPath(parent: string, key: string): string {
  return parent === '' ? key : `${parent}.${key}`;
}

/** Every leaf of the tree with its dotted path, in schema order. */
export function schemaLeaves(node: SchemaNode, prefix = ''): { path: string; node: LeafNode }[] {
  if (node.kind !== 'object') return [{ path: prefix, node }];
  return Object.entries(node.properties).flatMap(([key, child]) => schemaLeaves(child, joinPath(prefix, key)));
}

/** Every node of the tree (sections and leaves) with its dotted path. */
function schemaNodes(node: SchemaNode, prefix = ''): { path: string; node: SchemaNode }[] {
  const self = prefix === '' ? [] : [{ path: prefix, node }];
  if (node.kind !== 'object') return self;
  return [...self, ...Object.entries(node.properties).flatMap(([key, child]) => schemaNodes(child, joinPath(prefix, key)))];
}

/** "unknown key" with the likeliest intended key: a sibling within typo distance, else the same name elsewhere. */
function unknownKeyProblem(
  root: ObjectNode,
  parent: ObjectNode,
  parentPath: string,
  key: string,
  where: string | undefined,
  written?: (keys: readonly string[]) => string | undefined,
): ConfigProblem {
  const siblings = Object.keys(parent.properties);
  const near = didYouMean(key, siblings);
  let hint: string;
  if (key.includes('.') && 'node' in nodeAtPath(root, joinPath(parentPath, key), where)) {
    // The same key also written nested is a duplicate; name both lines so neither is missed.
    const nestedAt = written?.([...keysOf(parentPath), ...key.split('.')]);
    const twin = nestedAt !== undefined ? `; ${joinPath(parentPath, key)} is also written nested at ${nestedAt}, so drop this one` : '';
    hint = ` (dotted keys are for command-line overrides; in a file, nest the sections${twin})`;
  } else if (near !== undefined) {
    hint = ` (did you mean '${joinPath(parentPath, near)}'?)`;
  } else {
    const elsewhere = schemaNodes(root).find(({ path }) => path.split('.').pop() === key);
    hint = elsewhere
      ? ` (did you mean '${elsewhere.path}'?)`
      : `; keys ${parentPath === '' ? 'at the top level' : `in ${parentPath}`}: ${siblings.join(', ')}`;
  }
  return { path: joinPath(parentPath, key), message: `unknown key${hint}`, where };
}

/** The node at a dotted path, or the problem with the path (unknown key, or a key inside a value). */
export function nodeAtPath(root: ObjectNode, path: string, where: string | undefined): { node: SchemaNode } | { problem: ConfigProblem } {
  let node: SchemaNode = root;
  let walked = '';
  for (const key of path.split('.')) {
    if (node.kind !== 'object') {
      return { problem: { path, message: `'${walked}' is a value, not a section with keys`, where } };
    }
    const child: SchemaNode | undefined = Object.hasOwn(node.properties, key) ? node.properties[key] : undefined;
    if (child === undefined) return { problem: unknownKeyProblem(root, node, walked, key, where) };
    node = child;
    walked = joinPath(walked, key);
  }
  return { node };
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : `a list of ${value.length}`;
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') {
    // Control characters (a binary file given as the config) are shown escaped, not echoed to the terminal.
    const shown = JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
    return /[\u0000-\u0008\u000e-\u001f\u0080-\u009f\ufffd]/.test(value) ? `${shown} (binary data?)` : shown;
  }
  return String(value);
}

/** `in (0, 1]`, `>= 2`, `> 0`, or '' when unbounded. */
function rangeText(node: IntegerNode | NumberNode): string {
  const exclusiveLo = node.kind === 'number' && node.exclusiveMinimum !== undefined;
  const exclusiveHi = node.kind === 'number' && node.exclusiveMaximum !== undefined;
  const lo = node.kind === 'number' ? (node.exclusiveMinimum ?? node.minimum) : node.minimum;
  const hi = node.kind === 'number' ? (node.exclusiveMaximum ?? node.maximum) : node.maximum;
  if (lo !== undefined && hi !== undefined) return `in ${exclusiveLo ? '(' : '['}${lo}, ${hi}${exclusiveHi ? ')' : ']'}`;
  if (lo !== undefined) return `${exclusiveLo ? '>' : '>='} ${lo}`;
  if (hi !== undefined) return `${exclusiveHi ? '<' : '<='} ${hi}`;
  return '';
}

function inRange(node: IntegerNode | NumberNode, x: number): boolean {
  if (node.kind === 'number' && node.fixed !== undefined) return x === node.fixed.value;
  if (node.minimum !== undefined && x < node.minimum) return false;
  if (node.maximum !== undefined && x > node.maximum) return false;
  if (node.kind === 'number') {
    if (node.exclusiveMinimum !== undefined && x <= node.exclusiveMinimum) return false;
    if (node.exclusiveMaximum !== undefined && x >= node.exclusiveMaximum) return false;
  }
  return true;
}

/** What a leaf accepts, as a phrase for error messages ("an integer >= 2 or null"). */
export function expectation(node: LeafNode): string {
  let text: string;
  switch (node.kind) {
    case 'integer':
    case 'number': {
      if (node.kind === 'number' && node.fixed !== undefined) {
        text = `${node.fixed.value} (fixed by ${node.fixed.why})`;
        break;
      }
      const range = rangeText(node);
      text = `${node.kind === 'integer' ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
      break;
    }
    case 'boolean':
      text = 'true or false';
      break;
    case 'enum':
      text = `one of ${node.values.join(', ')}`;
      break;
    case 'path':
      text = node.role === 'model' ? 'a model folder or Hub id (org/name[@rev])' : node.role === 'file' ? 'a file path' : 'a path';
      break;
    case 'sources':
      text = `a path or list of paths (each may be ${BUILTIN_PREFIX}NAME)`;
      break;
    case 'bytes':
      text = 'a size (8GiB, 8GB, or bytes)';
      break;
    case 'count':
      text = 'a count of at least 1 (500000, 500k, 3M, 2B)';
      break;
    case 'tuple':
      text = `a list of ${node.items.length} numbers`;
      break;
  }
  return node.nullable ? `${text} or null` : text;
}

/** Bytes of a size such as `8GiB` or `8GB`, or undefined when it is not one. */
function byteSizeOrUndefined(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 1 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  try {
    return parseByteSize(value);
  } catch {
    return undefined;
  }
}

/** The normalised leaf value, or a problem message. */
function checkLeaf(node: LeafNode, value: unknown, path: string, problems: (path: string, message: string) => void): { ok: true; value: unknown } | { ok: false } {
  const bad = (): { ok: false } => {
    problems(path, `must be ${expectation(node)}, got ${describeValue(value)}`);
    return { ok: false };
  };
  if (value === null) return node.nullable ? { ok: true, value: null } : bad();
  switch (node.kind) {
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) return bad();
      if (node.kind === 'integer' && !Number.isSafeInteger(value)) return bad();
      return inRange(node, value) ? { ok: true, value } : bad();
    case 'boolean':
      return typeof value === 'boolean' ? { ok: true, value } : bad();
    case 'enum': {
      if (typeof value === 'string' && node.values.includes(value)) return { ok: true, value };
      const near = typeof value === 'string' ? didYouMean(value, node.values) : undefined;
      problems(path, `must be ${expectation(node)}, got ${describeValue(value)}${near !== undefined ? ` (did you mean '${near}'?)` : ''}`);
      return { ok: false };
    }
    case 'path':
      return typeof value === 'string' && value.trim() !== '' ? { ok: true, value } : bad();
    case 'sources': {
      const list = typeof value === 'string' ? [value] : value;
      if (!Array.isArray(list) || list.length === 0) return bad();
      let ok = true;
      list.forEach((item, i) => {
        const itemPath = typeof value === 'string' ? path : `${path}[${i}]`;
        if (typeof item !== 'string' || item.trim() === '') {
          problems(itemPath, `must be a file path or ${BUILTIN_PREFIX}NAME, got ${describeValue(item)}`);
          ok = false;
        } else if (item.startsWith(BUILTIN_PREFIX) && !isBuiltinCorpus(item.slice(BUILTIN_PREFIX.length))) {
          const near = didYouMean(item.slice(BUILTIN_PREFIX.length), BUILTIN_CORPORA);
          const hint = near !== undefined ? ` (did you mean '${BUILTIN_PREFIX}${near}'?)` : '';
          problems(itemPath, `'${item}' is not a built-in corpus; they are ${BUILTIN_CORPORA.map((c) => BUILTIN_PREFIX + c).join(', ')}${hint}`);
          ok = false;
        }
      });
      return ok ? { ok: true, value: [...(list as string[])] } : { ok: false };
    }
    case 'bytes': {
      const bytes = byteSizeOrUndefined(value);
      return bytes === undefined ? bad() : { ok: true, value: bytes };
    }
    case 'count': {
      const count = typeof value === 'number' ? (Number.isSafeInteger(value) && value >= 1 ? value : undefined) : typeof value === 'string' ? parseCount(value) : undefined;
      return count === undefined ? bad() : { ok: true, value: count };
    }
    case 'tuple': {
      if (!Array.isArray(value) || value.length !== node.items.length) return bad();
      let ok = true;
      node.items.forEach((item, i) => {
        if (!checkLeaf(item, value[i], `${path}[${i}]`, problems).ok) ok = false;
      });
      return ok ? { ok: true, value: [...(value as number[])] } : { ok: false };
    }
  }
}

/**
 * Checks `value` (plain data from YAML) against `node` at `path`, adding valid leaves and all
 * problems to `out`. `root` is the whole schema, used to suggest keys that live elsewhere.
 */
export function checkValue(root: ObjectNode, node: SchemaNode, value: unknown, path: string, out: CheckResult, locate: Locator): void {
  const report = (at: string, message: string): void => {
    // An item's problem (`data.train[1]`) is located at its list's key: items have no key line.
    out.problems.push({ path: at, message, where: locate(keysOf(path)) });
  };
  if (node.kind !== 'object') {
    const result = checkLeaf(node, value, path, report);
    if (result.ok) {
      out.leaves.set(path, result.value);
      out.failed.delete(path);
    } else {
      out.failed.add(path);
    }
    return;
  }
  if (value === null && path === '') return; // an empty document sets nothing
  if (value === null && node.nullable) {
    // `structured=` or `structured:` with nothing under it: the section is back to its defaults,
    // which is how a later layer undoes an earlier layer's section.
    out.cleared.add(path);
    for (const leaf of schemaLeaves(node, path)) {
      out.leaves.delete(leaf.path);
      out.failed.delete(leaf.path);
    }
    return;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    report(path, `must be a section of keys (${Object.keys(node.properties).join(', ')}), got ${describeValue(value)}`);
    for (const leaf of schemaLeaves(node, path)) out.failed.add(leaf.path);
    return;
  }
  for (const [key, child] of Object.entries(value as Record<string, unknown>)) {
    const childNode = Object.hasOwn(node.properties, key) ? node.properties[key] : undefined;
    if (childNode === undefined) {
      out.problems.push(unknownKeyProblem(root, node, path, key, locate([...keysOf(path), key]), locate.written));
    } else {
      checkValue(root, childNode, child, joinPath(path, key), out, locate);
    }
  }
}
