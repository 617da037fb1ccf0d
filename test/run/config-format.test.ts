import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { resolveConfig } from '../../src/run/config.js';
import { canonicalJson, configHash, formatResolvedConfig } from '../../src/run/config-format.js';
import type { ResolvedConfig } from '../../src/run/config-schema.js';
import { MINIMAL, tempFolder } from './helpers.js';

/** The same object with keys in reverse order at every depth. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).reverse().map(([k, v]) => [k, reversedKeys(v)]));
  }
  return value;
}

describe('canonicalJson', () => {
  it('sorts keys at every depth and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, 1], c: null } })).toBe('{"a":{"c":null,"d":[3,1]},"b":1}');
  });
});

describe('configHash', () => {
  it('does not depend on key order', async () => {
    const { config } = await resolveConfig({ cwd: tempFolder() });
    const shuffled = reversedKeys(config) as ResolvedConfig;
    expect(JSON.stringify(shuffled)).not.toBe(JSON.stringify(config));
    expect(configHash(shuffled)).toBe(configHash(config));
    expect(configHash(config)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes with any value except the output folder', async () => {
    const cwd = tempFolder();
    const base = configHash((await resolveConfig({ cwd })).config);
    expect(configHash((await resolveConfig({ overrides: ['output=elsewhere'], cwd })).config)).toBe(base);
    expect(configHash((await resolveConfig({ overrides: ['seed=1'], cwd })).config)).not.toBe(base);
    expect(configHash((await resolveConfig({ overrides: ['optimizer.betas=[0.9, 0.951]'], cwd })).config)).not.toBe(base);
  });

  it('is the same for the same config written differently', async () => {
    const cwd = tempFolder({
      'a.yaml': 'model: ./m\ndata: { train: t.txt }\nstages: { count: 3 }\n',
      'b.yaml': 'stages:\n  count: 3\n  steps: 100\ndata:\n  train: [t.txt]\nmodel: ./m/\n',
    });
    const a = await resolveConfig({ file: 'a.yaml', cwd });
    const b = await resolveConfig({ file: 'b.yaml', cwd });
    expect(configHash(a.config)).toBe(configHash(b.config));
  });
});

describe('formatResolvedConfig', () => {
  it('marks values from the file and overrides, and reads back as the same config', async () => {
    const cwd = tempFolder({ 'run.yaml': `${MINIMAL}method: lora\nlora: { rank: 4 }\n` });
    const resolved = await resolveConfig({ file: 'run.yaml', overrides: ['stages.count=3', 'data.eval=[e.txt]'], cwd });
    const text = formatResolvedConfig(resolved);
    expect(text).toContain(`config hash ${configHash(resolved.config).slice(0, 16)}`);
    expect(text).toMatch(/^method: lora # file$/m);
    expect(text).toMatch(/^ {2}count: 3 # override$/m);
    expect(text).toMatch(/^ {2}eval: # override$/m);
    expect(text).toMatch(/^ {2}ratio: 0\.375$/m); // a default carries no mark
    expect(text).toMatch(/^ {2}betas: \[ 0\.9, 0\.95 \]$/m);
    expect(parse(text)).toEqual(resolved.config);

    writeFileSync(path.join(cwd, 'printed.yaml'), text);
    const again = await resolveConfig({ file: 'printed.yaml', cwd });
    expect(again.config).toEqual(resolved.config);
  });

  it('round-trips the embedded default and the other methods', async () => {
    for (const overrides of [[], ['method=vanilla'], ['setting=structured'], ['method=lora', 'lora.match_params=x', 'stages.tokens=999']]) {
      const cwd = tempFolder();
      const resolved = await resolveConfig({ overrides, cwd });
      writeFileSync(path.join(cwd, 'printed.yaml'), formatResolvedConfig(resolved));
      expect((await resolveConfig({ file: 'printed.yaml', cwd })).config).toEqual(resolved.config);
    }
  });
});
