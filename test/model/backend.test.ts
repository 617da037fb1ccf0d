import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { gpuDeviceNodePresent, probeBackends, selectBackend } from '../../src/model/backend.js';

describe('backend selection', () => {
  it('probes webgpu, tensorflow, wasm, cpu in that order; wasm and cpu always work', async () => {
    const probes = await probeBackends();
    expect(probes.map((p) => p.name)).toEqual(['webgpu', 'tensorflow', 'wasm', 'cpu']);
    expect(probes.find((p) => p.name === 'wasm')!.available).toBe(true);
    expect(probes.find((p) => p.name === 'cpu')!.available).toBe(true);
    for (const p of probes) expect(p.detail.length).toBeGreaterThan(0);
  });

  it('auto picks the first available backend and forced ones are honoured', async () => {
    const first = (await probeBackends()).find((p) => p.available)!;
    expect((await selectBackend('auto')).name).toBe(first.name);
    expect((await selectBackend('cpu')).name).toBe('cpu');
    expect((await selectBackend('wasm')).name).toBe('wasm');
  });

  it('forcing an unavailable backend is a usage error naming it and what is available', async () => {
    const missing = (await probeBackends()).find((p) => !p.available);
    if (!missing) return; // every backend present (a GPU machine with tfjs-node): nothing to refuse
    const err = await selectBackend(missing.name).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(new RegExp(`backend '${missing.name}' is not available`));
    expect((err as Error).message).toMatch(/available: .*wasm, cpu/);
    await expect(selectBackend('bogus' as 'cpu')).rejects.toThrow(/unknown backend 'bogus'/);
  });

  it('probing and selecting print nothing on stdout or stderr', () => {
    const code = [
      "import * as tf from '@tensorflow/tfjs';",
      `const { probeBackends, selectBackend } = await import(${JSON.stringify(resolve('src/model/backend.ts'))});`,
      'await probeBackends();',
      "await selectBackend('auto');",
      'tf.tensor([1, 2]).dataSync();',
      "await selectBackend('cpu');",
      'tf.tensor([1, 2]).dataSync();',
    ].join('\n');
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', cwd: resolve('.') });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });

  // webgpu is probed only where a GPU device node exists: without one, the Vulkan loader and
  // Dawn print errors (or set up a software adapter) from native code.
  it.each([
    [['nvidia0', 'nvidiactl'], true],
    [['dri/renderD128', 'dri/card0'], true],
    [['dxg'], true],
    [['nvidiactl', 'nvidia-uvm', 'dri/card0'], false],
    [[], false],
  ] as const)('GPU device nodes %j: %s', (nodes, expected) => {
    const dev = mkdtempSync(join(tmpdir(), 'apex-dev-'));
    try {
      for (const node of nodes) {
        mkdirSync(join(dev, node, '..'), { recursive: true });
        writeFileSync(join(dev, node), '');
      }
      expect(gpuDeviceNodePresent(dev)).toBe(expected);
    } finally {
      rmSync(dev, { recursive: true, force: true });
    }
  });
});
