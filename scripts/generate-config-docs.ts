/**
 * Regenerates docs/config.schema.json and the key reference in docs/config.md from the config
 * schema (src/run/config-schema.ts). Run after changing the schema:
 *   npx tsx scripts/generate-config-docs.ts
 * test/run/schema-docs.test.ts fails while either file is out of date.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configJsonSchemaText, withKeyReference } from '../src/run/schema-export.js';

const docs = fileURLToPath(new URL('../docs/', import.meta.url));
writeFileSync(`${docs}config.schema.json`, configJsonSchemaText());
writeFileSync(`${docs}config.md`, withKeyReference(readFileSync(`${docs}config.md`, 'utf8')));
process.stdout.write('wrote docs/config.schema.json and docs/config.md\n');
