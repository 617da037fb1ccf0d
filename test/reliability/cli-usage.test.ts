// Config and CLI matrix (issue 8): every command, given a missing argument or flag, a value of
// the wrong type or range, an unknown flag or a contradictory combination, exits 2 with a
// message naming the flag or config key, prints `{ok:false,error:{code,message,exit:2}}` with
// --json, and writes nothing: neither the output it was asked for nor anything else in its
// working folder or HF cache. The first case of every command runs as its own `node bin/run.js`
// process; the rest share one process (in-process-driver.ts), each in a folder of its own, so
// the matrix is not dominated by ~0.6 s of start-up per case.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { apex, apexInProcess, ensureBuilt, listTree, LLAMA, pooled, workspace, type CliResult } from './cli.js';

/** [command line, what the message must name]. Paths are relative to the case's own folder. */
type Case = readonly [args: readonly string[], names: RegExp];

const M = LLAMA;
const BAD_RUN_CONFIG = 'model: ./nowhere\nstages: { count: 2, stpes: 4 }\noptimizer: { lr: fast }\n';
const CONTRADICTORY_RUN_CONFIG = `model: ${M}\ndata: { train: [builtin:in-domain] }\nmethod: vanilla\nsetting: full\nlora: { rank: 4 }\n`;

const CASES: Record<string, readonly Case[]> = {
  inspect: [
    [['inspect'], /required arg:\s*model/],
    [['inspect', M, '--bogus'], /--bogus/],
    [['inspect', M, 'extra'], /Unexpected argument: extra/],
  ],
  env: [[['env', '--frobnicate'], /--frobnicate/]],
  eval: [
    [['eval'], /required arg:\s*model/],
    [['eval', M, '--seq-len', 'abc'], /--seq-len[\s\S]*abc/],
    [['eval', M, '--seq-len', '1'], /--seq-len/],
    [['eval', M, '--max-memory', 'lots'], /--max-memory: 'lots'/],
    [['eval', M, '--max-memory', '0'], /--max-memory/],
    [['eval', M, '--backend', 'gpu'], /--backend=gpu/],
    [['eval', M, '--data', 'a.txt', '--input-ids', 'ids.safetensors'], /--data[\s\S]*--input-ids/],
    [['eval', M, '--split-seed', '3'], /--split-seed 3 only applies with --split heldout or --split train/],
    [['eval', M, '--seed', '3'], /--seed 3 only applies with --samples/],
  ],
  generate: [
    [['generate', M, '--temperature', 'warm'], /--temperature/],
    [['generate', M, '--top-p', '2'], /--top-p/],
    [['generate', M, '--temperature', ''], /--temperature must be a number ≥ 0, got ''/],
    [['generate', M, '--temperature', '0x10'], /--temperature must be a number ≥ 0, got '0x10'/],
    [['generate', M, '--max-new-tokens', '-1'], /--max-new-tokens/],
    [['generate', M, '--prompt', 'x', '--input-ids', 'ids.safetensors'], /--input-ids[\s\S]*--prompt/],
    [['generate', M, '--max-memory', 'lots', '--ids-out', 'ids.safetensors'], /--max-memory/],
  ],
  analyze: [
    [['analyze', M], /Missing required flag output/],
    [['analyze', M, '-o', 'out', '--ratio', '2'], /--ratio/],
    [['analyze', M, '-o', 'out', '--ratio', 'half'], /--ratio/],
    [['analyze', M, '-o', 'out', '--score', 'best'], /--score=best/],
    [['analyze', M, '-o', 'out', '--max-memory', 'lots'], /--max-memory/],
    [['analyze', M, '-o', 'out', '--data', 'a.txt', '--corpus', 'in-domain'], /--corpus[\s\S]*--data/],
    [['analyze', M, '-o', 'out', '--base', M], /--base[\s\S]*--erank/],
    [['analyze', M, '-o', 'out', '--stage', '2'], /--stage[\s\S]*--decay-k/],
  ],
  expand: [
    [['expand'], /<model>[\s\S]*--run/],
    [['expand', M, '-o', 'out'], /--operators/],
    [['expand', M, '--operators', 'ops.safetensors'], /--output/],
    [['expand', '--run', 'r', '--stage', '1', M], /--run[\s\S]*<model>/],
    [['expand', '--stage', '1'], /--stage needs --run/],
    [['expand', '--run', 'r', '--stage', 'two'], /--stage/],
    [['expand', M, '--operators', 'ops.safetensors', '-o', M], /-o\/--output/],
    [['expand', M, '--operators', 'ops.safetensors', '-o', 'out', '--max-shard-size', 'huge'], /--max-shard-size/],
    [['expand', M, '--operators', 'ops.safetensors', '-o', 'out', '--out-dtype', 'F8'], /--out-dtype=F8/],
    [['expand', M, '--operators', 'ops.safetensors', '-o', 'out', '--max-memory', 'lots'], /--max-memory/],
  ],
  finetune: [
    [['finetune', M, '--steps', '2'], /Missing required flag output/],
    [['finetune', M, '-o', 'out'], /--steps or --tokens/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--ratio', '2'], /--ratio/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--lr', 'fast'], /--lr/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--lr', '-1'], /--lr/],
    [['finetune', M, '-o', 'out', '--steps', 'many'], /--steps/],
    [['finetune', M, '-o', 'out', '--tokens', 'lots'], /--tokens/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--tokens', '1k'], /--steps[\s\S]*--tokens/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--betas', '0.9'], /--betas/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--max-memory', 'lots'], /--max-memory/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--resume', '--force'], /--resume[\s\S]*--force/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--method', 'vanilla', '--setting', 'full'], /--setting/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--method', 'vanilla', '--lora-rank', '4'], /--lora-rank/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--tuned-attn-ratio', '1.5'], /--tuned-attn-ratio/],
    [['finetune', M, '-o', 'out', '--steps', '2', '--bogus'], /--bogus/],
    [['finetune', M, '-o', 'out', '--setps', '2'], /Nonexistent flag: --setps \(did you mean --steps\?\)/],
  ],
  run: [
    [['run', 'a.yaml', 'b.yaml'], /one config file/],
    [['run', 'stages.count=abc'], /stages\.count/],
    [['run', 'stages.cuont=2'], /stages\.cuont[\s\S]*did you mean 'stages\.count'/],
    [['run', 'max_memory=lots'], /max_memory/],
    [['run', 'bad.yaml'], /stages\.stpes[\s\S]*optimizer\.lr/],
    [['run', 'contradictory.yaml'], /setting[\s\S]*lora/],
    [['run', '--backend', 'gpu'], /--backend=gpu/],
    [['run', '--bogus'], /--bogus/],
  ],
};

/** Files each case's folder starts with (inputs some cases name; they must stay untouched). */
function seedFolder(dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bad.yaml'), BAD_RUN_CONFIG);
  writeFileSync(join(dir, 'contradictory.yaml'), CONTRADICTORY_RUN_CONFIG);
  writeFileSync(join(dir, 'a.yaml'), `model: ${M}\n`);
  writeFileSync(join(dir, 'b.yaml'), `model: ${M}\n`);
  writeFileSync(join(dir, 'a.txt'), 'some calibration text\n');
}

interface Outcome {
  readonly args: readonly string[];
  readonly names: RegExp;
  readonly result: CliResult;
  readonly before: string[];
  readonly after: string[];
  readonly via: 'process' | 'driver';
}

describe('usage errors: exit 2, the flag or key named, nothing written', () => {
  const ws = workspace('cli-usage');
  const fixtureBefore = listTree(LLAMA);
  const all = Object.values(CASES).flat();
  const outcomes: Outcome[] = [];

  beforeAll(async () => {
    await ensureBuilt(Object.keys(CASES));
    const planned = all.map(([args, names], i) => {
      const dir = join(ws, `case-${String(i).padStart(2, '0')}`);
      seedFolder(dir);
      // Half the cases with --json (the envelope), half without (the human message on stderr).
      const argv = [...args, ...(i % 2 === 0 ? ['--json'] : [])];
      const via: Outcome['via'] = all.findIndex(([a]) => a[0] === args[0]) === i ? 'process' : 'driver';
      return { args, names, dir, argv, via, before: listTree(dir) };
    });
    const driven = planned.filter((p) => p.via === 'driver');
    const [separate, shared] = await Promise.all([
      pooled(planned.filter((p) => p.via === 'process').map((p) => () => apex(p.argv, { cwd: p.dir, home: join(p.dir, 'hf-home') })), 2),
      apexInProcess(driven.map((p) => ({ args: p.argv, cwd: p.dir, home: join(p.dir, 'hf-home') })), ws),
    ]);
    const results = new Map<(typeof planned)[number], CliResult>();
    planned.filter((p) => p.via === 'process').forEach((p, i) => results.set(p, separate[i]!));
    driven.forEach((p, i) => results.set(p, shared[i]!));
    for (const p of planned) outcomes.push({ args: p.args, names: p.names, result: results.get(p)!, before: p.before, after: listTree(p.dir), via: p.via });
  }, 300_000);

  for (const [command, cases] of Object.entries(CASES)) {
    it(`${command}: ${cases.length} cases`, () => {
      for (const o of outcomes.filter((x) => x.args[0] === command)) {
        const label = `apex ${o.args.join(' ')} (${o.via})`;
        const r = o.result;
        expect(r.status, `${label}\n${r.stdout}${r.stderr}`).toBe(2);
        if (r.json) {
          expect(r.json.ok, label).toBe(false);
          expect(r.json.error, label).toMatchObject({ exit: 2, code: expect.stringMatching(/^[A-Z_]+$/) });
          expect(r.json.error!.message, label).toMatch(o.names);
          expect(r.stdout.trim().split('\n').length > 0 && r.stdout.trim().startsWith('{'), label).toBe(true);
        } else {
          expect(r.stdout, `${label}: stdout must stay empty`).toBe('');
          expect(r.stderr, label).toMatch(/^apex: error \[[A-Z_]+\]: /m);
          expect(r.stderr, label).toMatch(o.names);
        }
        expect(o.after, `${label} wrote files`).toEqual(o.before);
      }
    });
  }

  it('the fixture model the cases point at is untouched', () => {
    expect(listTree(LLAMA)).toEqual(fixtureBefore);
  });

  it('every case ran, with and without --json, in separate processes and in the shared one', () => {
    expect(outcomes.length).toBe(all.length);
    expect(outcomes.some((o) => o.result.json)).toBe(true);
    expect(outcomes.some((o) => !o.result.json)).toBe(true);
    expect(outcomes.filter((o) => o.via === 'process').length).toBe(Object.keys(CASES).length);
  });
});
