/**
 * Publishes the config schema: docs/config.schema.json (JSON Schema draft 2020-12, for editors
 * and other tools) and the key reference inside docs/config.md. Both are generated from
 * CONFIG_SCHEMA by scripts/generate-config-docs.ts and checked to be current by a test.
 */
import { stringify } from 'yaml';
import { BUILTIN_PREFIX, CONFIG_SCHEMA, type LeafNode, type ObjectNode, type SchemaNode } from './config-schema.js';
import { EMBEDDED_MODEL, embeddedDefaultConfig } from './default-config.js';
import { expectation, joinPath } from './schema-check.js';
import { COUNT_PATTERN } from '../util/token-count.js';

type Json = Record<string, unknown>;

function hasRequired(node: SchemaNode): boolean {
  return node.kind === 'object' ? node.requiredOneOf !== undefined || Object.values(node.properties).some(hasRequired) : node.required === true;
}

/** The schema that also accepts null, in the plainest form JSON Schema has for it. */
function withNull(schema: Json, nullable: boolean | undefined): Json {
  if (!nullable) return schema;
  if (Array.isArray(schema.anyOf)) return { ...schema, anyOf: [...schema.anyOf, { type: 'null' }] };
  if (Array.isArray(schema.enum)) return { ...schema, enum: [...schema.enum, null] };
  if (typeof schema.type === 'string') return { ...schema, type: [schema.type, 'null'] };
  return { anyOf: [schema, { type: 'null' }] };
}

function describe(node: SchemaNode): string {
  return node.defaultText ? `${node.description} Default: ${node.defaultText.replaceAll('`', '')}.` : node.description;
}

const BYTE_SIZE_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*([kKmMgGtT][iI]?[bB]|[bB])?\\s*$';

function leafSchema(node: LeafNode): Json {
  switch (node.kind) {
    case 'integer':
    case 'number': {
      if (node.kind === 'number' && node.fixed !== undefined) return { type: 'number', const: node.fixed.value };
      const { minimum, maximum } = node;
      const exclusive = node.kind === 'number' ? { exclusiveMinimum: node.exclusiveMinimum, exclusiveMaximum: node.exclusiveMaximum } : {};
      return { type: node.kind, minimum, maximum, ...exclusive };
    }
    case 'boolean':
      return { type: 'boolean' };
    case 'enum':
      return { enum: [...node.values] };
    case 'path':
      return { type: 'string', minLength: 1 };
    case 'sources': {
      const source = { type: 'string', minLength: 1, description: `A file path or ${BUILTIN_PREFIX}NAME.` };
      return { anyOf: [source, { type: 'array', items: source, minItems: 1 }] };
    }
    case 'bytes':
      return { anyOf: [{ type: 'string', pattern: BYTE_SIZE_PATTERN }, { type: 'integer', minimum: 1 }] };
    case 'count':
      return { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'string', pattern: COUNT_PATTERN }] };
    case 'tuple':
      return { type: 'array', prefixItems: node.items.map(leafSchema), minItems: node.items.length, maxItems: node.items.length, items: false };
  }
}

function nodeSchema(node: SchemaNode): Json {
  if (node.kind === 'object') {
    const required = Object.entries(node.properties)
      .filter(([, child]) => hasRequired(child))
      .map(([key]) => key);
    const properties = Object.fromEntries(Object.entries(node.properties).map(([key, child]) => [key, nodeSchema(child)]));
    // Exactly one of the keys, set (not null); the others absent or null, as config-rules.ts checks.
    const oneOf = node.requiredOneOf !== undefined
      ? { oneOf: node.requiredOneOf.map((key) => ({ required: [key], properties: Object.fromEntries(node.requiredOneOf!.map((k) => [k, k === key ? { not: { type: 'null' } } : { type: 'null' }])) })) }
      : {};
    const body: Json = { type: 'object', additionalProperties: false, properties, ...(required.length > 0 ? { required } : {}), ...oneOf };
    return { description: describe(node), ...withNull(body, node.nullable) };
  }
  const base = withNull(leafSchema(node), node.nullable);
  return { description: describe(node), ...base, ...(node.default !== undefined ? { default: node.default } : {}) };
}

/** Drops keys whose value is undefined, so the JSON text is stable. */
function compact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(compact);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, compact(v)]));
  }
  return value;
}

/** The text of docs/config.schema.json. */
export function configJsonSchemaText(): string {
  const schema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'apex run configuration',
    ...nodeSchema(CONFIG_SCHEMA),
  };
  return `${JSON.stringify(compact(schema), null, 2)}\n`;
}

function defaultCell(node: LeafNode): string {
  if (node.defaultText) return node.defaultText;
  if (node.required) return 'required';
  return node.default === undefined ? '' : `\`${JSON.stringify(node.default)}\``;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

function keyTable(node: ObjectNode, prefix: string): string {
  const rows = Object.entries(node.properties)
    .filter(([, child]) => child.kind !== 'object')
    .map(([key, child]) => {
      const leaf = child as LeafNode;
      return `| \`${joinPath(prefix, key)}\` | ${cell(expectation(leaf))} | ${cell(defaultCell(leaf))} | ${cell(leaf.description)} |`;
    });
  return ['| key | type | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

/** The generated key reference: top-level keys, then one table per section. */
export function configKeyReference(): string {
  const parts = ['### Top level', '', keyTable(CONFIG_SCHEMA, '')];
  for (const [key, child] of Object.entries(CONFIG_SCHEMA.properties as ObjectNode['properties'])) {
    if (child.kind !== 'object') continue;
    const when = child.defaultText ? ` (${child.defaultText})` : '';
    parts.push('', `### \`${key}\``, '', `${child.description}${when}`, '', keyTable(child, key));
  }
  parts.push(
    '',
    '### Embedded default',
    '',
    `\`apex run\` without a config file uses these values on top of the defaults above (the model path is relative to the apex package):`,
    '',
    '```yaml',
    stringify(embeddedDefaultConfig(EMBEDDED_MODEL)).trimEnd(),
    '```',
  );
  return parts.join('\n');
}

const GENERATED_BEGIN = '<!-- BEGIN GENERATED KEY REFERENCE (scripts/generate-config-docs.ts) -->';
const GENERATED_END = '<!-- END GENERATED KEY REFERENCE -->';

/** docs/config.md with its generated section replaced by the current key reference. */
export function withKeyReference(markdown: string): string {
  const begin = markdown.indexOf(GENERATED_BEGIN);
  const end = markdown.indexOf(GENERATED_END);
  if (begin < 0 || end < begin) throw new Error(`docs/config.md lacks the markers ${GENERATED_BEGIN} … ${GENERATED_END}`);
  return `${markdown.slice(0, begin + GENERATED_BEGIN.length)}\n\n${configKeyReference()}\n\n${markdown.slice(end)}`;
}
