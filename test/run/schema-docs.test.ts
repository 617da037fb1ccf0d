import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/run/config.js';
import { CONFIG_SCHEMA } from '../../src/run/config-schema.js';
import { schemaLeaves } from '../../src/run/schema-check.js';
import { configJsonSchemaText, withKeyReference } from '../../src/run/schema-export.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const read = (rel: string): string => readFileSync(path.join(root, rel), 'utf8');
const REGENERATE = 'out of date: run `npx tsx scripts/generate-config-docs.ts`';

describe('published schema and docs', () => {
  it('docs/config.schema.json is generated from the current schema', () => {
    expect(read('docs/config.schema.json'), REGENERATE).toBe(configJsonSchemaText());
  });

  it('docs/config.md carries the current key reference', () => {
    const doc = read('docs/config.md');
    expect(doc, REGENERATE).toBe(withKeyReference(doc));
  });

  it('documents every key with its path', () => {
    const doc = read('docs/config.md');
    for (const { path: key } of schemaLeaves(CONFIG_SCHEMA)) expect(doc).toContain(`| \`${key}\` |`);
  });

  it('the JSON Schema forbids unknown keys in every section and lists the required ones', () => {
    const schema = JSON.parse(configJsonSchemaText()) as { required: string[]; additionalProperties: boolean; properties: Record<string, { required?: string[] }> };
    expect(schema.required).toEqual(['model', 'data']);
    // data.train or data.train_input_ids, one of them (config-rules.ts refuses both).
    // Exactly one of them set: the other absent or null.
    expect((schema.properties.data as { oneOf?: unknown }).oneOf).toEqual([
      { required: ['train'], properties: { train: { not: { type: 'null' } }, train_input_ids: { type: 'null' } } },
      { required: ['train_input_ids'], properties: { train: { type: 'null' }, train_input_ids: { not: { type: 'null' } } } },
    ]);
    const text = configJsonSchemaText();
    const sections = Object.values(CONFIG_SCHEMA.properties).filter((n) => n.kind === 'object').length + 1;
    expect(text.match(/"additionalProperties": false/g)).toHaveLength(sections);
  });
});

describe('examples', () => {
  const examples = readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.yaml'));

  it('exist', () => {
    expect(examples.length).toBeGreaterThanOrEqual(2);
  });

  it.each(examples)('%s is a valid config', async (name) => {
    const { config } = await resolveConfig({ file: path.join('examples', name), cwd: root });
    expect(config.data.train.length).toBeGreaterThan(0);
  });
});
