import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../../src/errors.js';
import { resolveConfig } from '../../src/run/config.js';
import { MINIMAL, fileProblems, problemLines, tempFolder } from './helpers.js';

describe('config errors: single keys', () => {
  it('names an unknown top-level key with a sibling suggestion and the line', async () => {
    expect(await fileProblems(`${MINIMAL}sed: 3\n`)).toEqual(["run.yaml:4: sed: unknown key (did you mean 'seed'?)"]);
  });

  it('names an unknown nested key by its full path', async () => {
    expect(await fileProblems(`${MINIMAL}stages:\n  count: 2\n  cout: 3\n`)).toEqual([
      "run.yaml:6: stages.cout: unknown key (did you mean 'stages.count'?)",
    ]);
  });

  it('suggests a key of the same name in another section', async () => {
    expect(await fileProblems(`${MINIMAL}lr: 0.001\n`)).toEqual(["run.yaml:4: lr: unknown key (did you mean 'optimizer.lr'?)"]);
  });

  it('lists the valid keys when nothing is close', async () => {
    const [line] = await fileProblems(`${MINIMAL}eval:\n  frequency: 10\n`);
    expect(line).toBe('run.yaml:5: eval.frequency: unknown key; keys in eval: every, batch_size');
  });

  it('rejects wrong types', async () => {
    const lines = await fileProblems(
      `${MINIMAL}seed: "abc"\nstages:\n  decay_k: yes\n  count: 2.5\noptimizer:\n  betas: 0.9\neval: 5\n`,
    );
    expect(lines).toEqual([
      'run.yaml:4: seed: must be an integer in [0, 4294967295], got "abc"',
      'run.yaml:6: stages.decay_k: must be true or false, got "yes"',
      'run.yaml:7: stages.count: must be an integer in [1, 64], got 2.5',
      'run.yaml:9: optimizer.betas: must be a list of 2 numbers, got 0.9',
      'run.yaml:10: eval: must be a section of keys (every, batch_size), got 5',
    ]);
  });

  it('rejects out-of-range values at the edges of each range', async () => {
    const lines = await fileProblems(
      `${MINIMAL}  seq_len: 1\nstages:\n  ratio: 0\noptimizer:\n  lr: 0\n  betas: [0.9, 1.0]\n  weight_decay: -0.1\nmax_memory: lots\n`,
    );
    expect(lines).toEqual([
      'run.yaml:4: data.seq_len: must be an integer in [2, 1048576], got 1',
      'run.yaml:6: stages.ratio: must be a number in (0, 1], got 0',
      'run.yaml:8: optimizer.lr: must be a number > 0, got 0',
      'run.yaml:9: optimizer.betas[1]: must be a number in [0, 1), got 1',
      'run.yaml:10: optimizer.weight_decay: must be a number >= 0, got -0.1',
      'run.yaml:11: max_memory: must be a size (8GiB, 8GB, or bytes) or null, got "lots"',
    ]);
  });

  it('refuses warm-up fractions other than the method\'s, with the other problems, before any run', async () => {
    expect(await fileProblems(`${MINIMAL}optimizer:\n  warmup_fraction: 0.5\n  boundary_warmup_fraction: 0.005\n`, ['stages.count=0'])).toEqual([
      "run.yaml:5: optimizer.warmup_fraction: must be 0.03 (fixed by the trainer's learning-rate plan, docs/method.md §5), got 0.5",
      "override 'stages.count=0': stages.count: must be an integer in [1, 64], got 0",
    ]);
  });

  it('accepts the inclusive edges', async () => {
    const dir = tempFolder({ 'run.yaml': `${MINIMAL}  seq_len: 2\nstages:\n  ratio: 1\noptimizer:\n  betas: [0, 0]\n` });
    const { config } = await resolveConfig({ file: 'run.yaml', cwd: dir });
    expect([config.data.seq_len, config.stages.ratio, config.optimizer.betas]).toEqual([2, 1, [0, 0]]);
  });

  it('suggests the intended enum value', async () => {
    expect(await fileProblems(`${MINIMAL}method: vanila\n`)).toEqual([
      'run.yaml:4: method: must be one of apex, vanilla, lora, got "vanila" (did you mean \'vanilla\'?)',
    ]);
  });

  it('requires model and data.train in a config file', async () => {
    expect(await fileProblems('seed: 1\n')).toEqual([
      'run.yaml: model: is required: a model folder or Hub id (org/name[@rev])',
      'run.yaml: data.train: is required: a path or list of paths (each may be builtin:NAME), or token ids in data.train_input_ids',
    ]);
  });

  it('refuses data files and token ids for the same set, and accepts ids alone', async () => {
    expect(await fileProblems('model: ./m\ndata:\n  train: a.txt\n  train_input_ids: ids.safetensors\n  eval: b.txt\n  eval_input_ids: e.safetensors\n  calibration_input_ids: c.safetensors\n')).toEqual([
      'run.yaml:4: data.train_input_ids: is exclusive with data.train: give the training data as files or as token ids, and set the other to null',
      'run.yaml:6: data.eval_input_ids: is exclusive with data.eval: give the held-out data as files or as token ids, and set the other to null',
    ]);
    const dir = tempFolder({ 'run.yaml': 'model: ./m\ndata:\n  train_input_ids: ids/train.safetensors\n  train_samples: 500\n' });
    const { config } = await resolveConfig({ file: 'run.yaml', cwd: dir });
    expect(config.data).toMatchObject({ train: null, train_input_ids: path.join(dir, 'ids/train.safetensors'), train_samples: 500 });
  });

  it('rejects an empty list and an unknown built-in corpus', async () => {
    expect(await fileProblems('model: ./m\ndata:\n  train: []\n  eval: [ok.txt, "builtin:out-of-domian", builtin:wiki]\n')).toEqual([
      'run.yaml:3: data.train: must be a path or list of paths (each may be builtin:NAME) or null, got an empty list',
      "run.yaml:4: data.eval[1]: 'builtin:out-of-domian' is not a built-in corpus; they are builtin:out-of-domain, builtin:in-domain (did you mean 'builtin:out-of-domain'?)",
      "run.yaml:4: data.eval[2]: 'builtin:wiki' is not a built-in corpus; they are builtin:out-of-domain, builtin:in-domain",
    ]);
  });

  it('says how long a list of the wrong length is', async () => {
    expect(await fileProblems(`${MINIMAL}optimizer:\n  betas: [0.9]\n`)).toEqual(['run.yaml:5: optimizer.betas: must be a list of 2 numbers, got a list of 1']);
    expect(await fileProblems(`${MINIMAL}optimizer:\n  betas: []\n`)).toEqual(['run.yaml:5: optimizer.betas: must be a list of 2 numbers, got an empty list']);
  });

  it('rejects a model that is neither a folder nor a Hub id', async () => {
    expect(await fileProblems('model: not a/hub/id\ndata: { train: t.txt }\n')).toEqual([
      "run.yaml:1: model: 'not a/hub/id' is neither an existing folder nor a Hub id org/name[@revision] (start a local path with ./)",
    ]);
  });
});

describe('config errors: contradictions', () => {
  it('a token count that is not one', async () => {
    expect(await fileProblems(`${MINIMAL}stages:\n  steps: null\n  tokens: 3MB\n`)).toEqual(['run.yaml:6: stages.tokens: must be a count of at least 1 (500000, 500k, 3M, 2B) or null, got "3MB"']);
    expect(await fileProblems(`${MINIMAL}stages:\n  steps: null\n  tokens: 0\n`)).toEqual(['run.yaml:6: stages.tokens: must be a count of at least 1 (500000, 500k, 3M, 2B) or null, got 0']);
  });

  it('steps and tokens both set', async () => {
    expect(await fileProblems(`${MINIMAL}stages:\n  steps: 10\n  tokens: 1000\n`)).toEqual([
      'run.yaml:6: stages.tokens: is exclusive with stages.steps: set one and the other to null',
    ]);
  });

  it('neither steps nor tokens', async () => {
    expect(await fileProblems(`${MINIMAL}stages:\n  steps: null\n`)).toEqual([
      'run.yaml:5: stages.steps: one of stages.steps and stages.tokens must be set',
    ]);
  });

  it('setting with method vanilla or lora', async () => {
    expect(await fileProblems(`${MINIMAL}method: vanilla\nsetting: full\n`)).toEqual([
      'run.yaml:5: setting: applies only to method apex (method is vanilla)',
    ]);
    expect(await fileProblems(MINIMAL, ['method=lora', 'setting=operators'])).toEqual([
      "override 'setting=operators': setting: applies only to method apex (method is lora)",
    ]);
  });

  it('a lora section with method apex', async () => {
    expect(await fileProblems(`${MINIMAL}method: apex\nlora: { rank: 4 }\n`)).toEqual([
      'run.yaml:5: lora.rank: applies only to method lora (method is apex); drop the section, or override lora= to clear it',
    ]);
  });

  it('a structured section without setting structured', async () => {
    expect(await fileProblems(`${MINIMAL}setting: operators\nstructured:\n  train_embeddings: false\n`)).toEqual([
      'run.yaml:6: structured.train_embeddings: applies only to method apex with setting structured (method is apex, setting operators); drop the section, or override structured= to clear it',
    ]);
  });

  it('structured tuned ratios below the selection ratio are small totals, not a contradiction', async () => {
    const dir = tempFolder({ 'run.yaml': `${MINIMAL}setting: structured\nstructured: { tuned_attn_ratio: 0.25, tuned_ffn_ratio: 0.01 }\n` });
    const { config } = await resolveConfig({ file: 'run.yaml', cwd: dir });
    expect(config.structured).toMatchObject({ tuned_attn_ratio: 0.25, tuned_ffn_ratio: 0.01 });
  });

  it('lora rank together with match_params, and no rank at all', async () => {
    expect(await fileProblems(`${MINIMAL}method: lora\nlora: { rank: 8, match_params: ../apex }\n`)).toEqual([
      'run.yaml:5: lora.rank: is exclusive with lora.match_params, which picks the rank; set one',
    ]);
    expect(await fileProblems(`${MINIMAL}method: lora\nlora: { rank: null }\n`)).toEqual([
      'run.yaml:5: lora.rank: must be set when lora.match_params is null',
    ]);
  });

  it('a vanilla baseline next to a vanilla run', async () => {
    expect(await fileProblems(`${MINIMAL}method: vanilla\nbaseline: { vanilla: true }\n`)).toEqual([
      'run.yaml:5: baseline.vanilla: is the run itself with method vanilla; set it to false',
    ]);
  });

  it('decay_k with a single stage is fine', async () => {
    const dir = tempFolder({ 'run.yaml': `${MINIMAL}stages: { count: 1, decay_k: true }\n` });
    const { config } = await resolveConfig({ file: 'run.yaml', cwd: dir });
    expect(config.stages).toMatchObject({ count: 1, decay_k: true });
  });

  it('stays silent about a rule whose key already failed its own check', async () => {
    // method is invalid, so "lora applies only to method lora" would be noise
    expect(await fileProblems(`${MINIMAL}method: lorra\nlora: { rank: 4 }\n`)).toEqual([
      'run.yaml:4: method: must be one of apex, vanilla, lora, got "lorra" (did you mean \'lora\'?)',
    ]);
  });
});

describe('config errors: reporting', () => {
  it('reports every problem of file and overrides together', async () => {
    const text = `${MINIMAL}  evl: x.txt\nmethod: vanilla\nsetting: full\nstages:\n  cout: 3\n  ratio: 1.5\noptimizer:\n  lr: -1\n`;
    const lines = await fileProblems(text, ['stages.cnt=3', 'optimizer.lr=abc', 'nonsense']);
    expect(lines).toEqual([
      "run.yaml:4: data.evl: unknown key (did you mean 'data.eval'?)",
      "run.yaml:8: stages.cout: unknown key (did you mean 'stages.count'?)",
      'run.yaml:9: stages.ratio: must be a number in (0, 1], got 1.5',
      'run.yaml:11: optimizer.lr: must be a number > 0, got -1',
      "override 'stages.cnt=3': stages.cnt: unknown key (did you mean 'stages.count'?)",
      'override \'optimizer.lr=abc\': optimizer.lr: must be a number > 0, got "abc"',
      "override 'nonsense': expected key=value, e.g. stages.count=3 or data.train=[a.txt,b.txt]",
      'run.yaml:6: setting: applies only to method apex (method is vanilla)',
    ]);
  });

  it('names file, line and column of YAML syntax errors, and skips "required" noise', async () => {
    const lines = await fileProblems('model: m\ndata:\n  train: [a.txt\nseed: 1\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(line).toMatch(/^run\.yaml:\d+:\d+: YAML syntax error: /);
    expect(lines[0]).toMatch(/^run\.yaml:4:1: /);
  });

  it('lists at most five YAML syntax errors of a file that is not YAML, then how many more', async () => {
    const jsonl = Array.from({ length: 60 }, (_, i) => `{"messages": [{"role": "user", "content": "q${i}"}]}, {"x": ]`).join('\n');
    const lines = await fileProblems(jsonl);
    expect(lines.length).toBe(6);
    lines.slice(0, 5).forEach((line) => expect(line).toMatch(/^run\.yaml:\d+:\d+: YAML syntax error: /));
    expect(lines[5]).toMatch(/^run\.yaml: \d+ more YAML syntax errors not shown \(is run\.yaml a YAML config\?\)$/);
  });

  it('treats duplicate keys as syntax errors', async () => {
    expect(await fileProblems(`${MINIMAL}seed: 1\nseed: 2\n`)).toEqual(['run.yaml:5:1: YAML syntax error: Map keys must be unique']);
  });

  it('rejects a config that is not a mapping', async () => {
    expect(await fileProblems('- a\n- b\n')).toEqual(['run.yaml: must be a section of keys (model, output, seed, backend, max_memory, data, method, setting, structured, lora, stages, optimizer, eval, checkpoint, baseline), got a list of 2']);
  });

  it('names keys that are not names (null, a list) with their line, and lets no library warning through', async () => {
    expect(await fileProblems(`${MINIMAL}~: 3\nstages:\n  [a, b]: 1\n`)).toEqual(['run.yaml:4: a key must be a name, got an empty key', 'run.yaml:6: stages: a key must be a name, got a list']);
  });

  it('shows a binary file given as the config escaped, not raw', async () => {
    const [line] = await fileProblems('\ufffd\u0012\u0000{"__metadata__":{}}');
    expect(line).toMatch(/got "\ufffd\\u0012\\u0000\{\\"__metadata__\\":\{\}\}" \(binary data\?\)$/);
    expect(line).not.toMatch(/[\u0000-\u0008\u0012]/);
  });

  it('a missing config file is an input error (exit 3)', async () => {
    const err = await resolveConfig({ file: 'missing.yaml', cwd: tempFolder() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).exit).toBe(3);
    expect((err as InputError).message).toContain('missing.yaml');
  });

  it('a mistyped config file name names the closest file next to it', async () => {
    const dir = tempFolder();
    writeFileSync(path.join(dir, 'run.yaml'), MINIMAL);
    const err = await resolveConfig({ file: 'run.yml', cwd: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).exit).toBe(3);
    expect((err as InputError).message).toBe(`config file run.yml: no such file (${path.join(dir, 'run.yml')}) (did you mean run.yaml?)`);
  });

  it('a folder given as config file is an input error (exit 3)', async () => {
    const err = await resolveConfig({ file: '.', cwd: tempFolder() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
  });

  it('a device given as config file is refused, not read without end (exit 3)', async () => {
    const err = await resolveConfig({ file: '/dev/zero', cwd: tempFolder() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toBe('config file /dev/zero: not a regular file (a socket or device); apex reads this file whole, so it must be a file');
  });

  it.skipIf(process.platform === 'win32')('a pipe given as config file that passes the size limit is too large, as a file is (exit 2, CONFIG_INVALID)', async () => {
    const dir = tempFolder();
    const fifo = path.join(dir, 'config.yaml');
    execFileSync('mkfifo', [fifo]);
    // A writer of 2 MiB (twice the limit); it may be cut off when the reader stops.
    const writer = spawn(process.execPath, ['-e', `const fs = require('fs'); const fd = fs.openSync(${JSON.stringify(fifo)}, 'w'); try { fs.writeSync(fd, Buffer.alloc(2 << 20, 0x23)); } catch {}`], { stdio: 'ignore' });
    try {
      const err = await resolveConfig({ file: fifo, cwd: dir }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect(err).toMatchObject({ code: 'CONFIG_INVALID', exit: 2, message: `config file ${fifo} is more than 1048576 bytes; a config file is a few kilobytes` });
    } finally {
      writer.kill();
    }
  });

  it('override paths get the same unknown-key and section checks', async () => {
    const dir = tempFolder();
    expect(await problemLines({ overrides: ['stages.cout=3', 'output.x=1', 'optimizer.betas=[0.9', 'data.tran=a.txt'], cwd: dir })).toEqual([
      "override 'stages.cout=3': stages.cout: unknown key (did you mean 'stages.count'?)",
      "override 'output.x=1': output.x: 'output' is a value, not a section with keys",
      "override 'optimizer.betas=[0.9': optimizer.betas: value is not valid YAML (Flow sequence must end with a ]); quote it",
      "override 'data.tran=a.txt': data.tran: unknown key (did you mean 'data.train'?)",
    ]);
  });
});

describe('config errors: odd keys', () => {
  it('explains a dotted key written in a file', async () => {
    expect(await fileProblems(`${MINIMAL}stages.count: 3\n`)).toEqual([
      'run.yaml:4: stages.count: unknown key (dotted keys are for command-line overrides; in a file, nest the sections)',
    ]);
  });

  it('puts a dotted key and its nested twin each at its own line, naming both', async () => {
    // Lines: 4 the dotted key, 5 its section, 6 the nested key.
    expect(await fileProblems(`${MINIMAL}optimizer.lr: 1e-4\noptimizer:\n  lr: 3e-4\n`)).toEqual([
      'run.yaml:4: optimizer.lr: unknown key (dotted keys are for command-line overrides; in a file, nest the sections; optimizer.lr is also written nested at run.yaml:6, so drop this one)',
    ]);
    // The other order: the nested key's own problem stays at its line (5), the dotted key at 7.
    expect(await fileProblems(`${MINIMAL}optimizer:\n  lr: 0\nseed: 1\noptimizer.lr: 1e-4\n`)).toEqual([
      'run.yaml:5: optimizer.lr: must be a number > 0, got 0',
      'run.yaml:7: optimizer.lr: unknown key (dotted keys are for command-line overrides; in a file, nest the sections; optimizer.lr is also written nested at run.yaml:5, so drop this one)',
    ]);
  });

  it('reports keys that look like paths or prototype names as plain unknown keys', async () => {
    const lines = await fileProblems(`${MINIMAL}"a.": 1\n"x[": 2\nconstructor: 3\n`);
    expect(lines.map((l) => l.split(': unknown key')[0])).toEqual(['run.yaml:4: a.', 'run.yaml:5: x[', 'run.yaml:6: constructor']);
  });
});
