import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/run/config.js';
import { CONFIG_SCHEMA } from '../../src/run/config-schema.js';
import { EMBEDDED_BUDGET, EMBEDDED_MODEL_PATH, EMBEDDED_TRAIN_DATA } from '../../src/run/default-config.js';
import { schemaLeaves } from '../../src/run/schema-check.js';
import { MINIMAL, tempFolder } from './helpers.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

describe('resolveConfig: defaults', () => {
  it('fills every key from the schema defaults when the file sets only the required ones', async () => {
    const dir = tempFolder({ 'run.yaml': MINIMAL });
    const { config, sources } = await resolveConfig({ file: 'run.yaml', cwd: dir });
    expect(config).toEqual({
      model: path.join(dir, 'model'),
      output: path.join(dir, 'apex-run'),
      seed: 0,
      backend: 'auto',
      max_memory: null,
      data: { train: [path.join(dir, 'train.txt')], train_input_ids: null, eval: null, eval_input_ids: null, calibration: null, calibration_input_ids: null, seq_len: 128, calibration_samples: 64, eval_samples: null, train_samples: null },
      method: 'apex',
      setting: 'full',
      structured: null,
      lora: null,
      stages: { count: 2, steps: 100, tokens: null, ratio: 0.375, decay_k: false, score: 'rank', random_selection: false, reverse: false },
      optimizer: { lr: 3e-4, betas: [0.9, 0.95], weight_decay: 0, grad_clip: 1, batch_size: 8, grad_accum: 1, recompute_activations: false, warmup_fraction: 0.03, boundary_warmup_fraction: 0.005 },
      eval: { every: 50, batch_size: 8 },
      checkpoint: { every: 50, keep: 2 },
      baseline: { vanilla: true },
    });
    // one source per schema leaf; only the two written keys come from the file
    expect(Object.keys(sources).sort()).toEqual(schemaLeaves(CONFIG_SCHEMA).map((l) => l.path).sort());
    expect(Object.entries(sources).filter(([, s]) => s !== 'default').map(([k]) => k)).toEqual(['model', 'data.train']);
  });

  it('applies the embedded default without a file: bundled model, builtin corpus, apex full, 2 stages, vanilla baseline', async () => {
    const cwd = tempFolder();
    const { config, sources, file } = await resolveConfig({ cwd });
    expect(file).toBeNull();
    expect(config.model).toBe(path.join(repoRoot, 'fixtures/llama-mha-f32'));
    expect(config.model).toBe(EMBEDDED_MODEL_PATH);
    expect(existsSync(path.join(config.model, 'config.json'))).toBe(true);
    expect(config.data.train).toEqual([EMBEDDED_TRAIN_DATA]);
    expect(config.data.train).toEqual(['builtin:out-of-domain']);
    expect(config.output).toBe(path.join(cwd, 'apex-run'));
    expect([config.method, config.setting, config.baseline.vanilla]).toEqual(['apex', 'full', true]);
    expect(config.stages.count).toBe(EMBEDDED_BUDGET.stages);
    expect(config.stages.steps).toBe(EMBEDDED_BUDGET.stepsPerStage);
    expect(config.stages.tokens).toBeNull();
    expect(Object.values(sources).every((s) => s === 'default')).toBe(true);
  });
});

describe('resolveConfig: paths', () => {
  it('resolves file paths against the config file folder, override paths against cwd', async () => {
    const cwd = tempFolder({ 'configs/sub/run.yaml': 'model: ../models/m\noutput: out\ndata:\n  train: [a.txt, ../b.txt, builtin:in-domain]\n  calibration: cal.txt\n' });
    const { config } = await resolveConfig({ file: 'configs/sub/run.yaml', overrides: ['data.eval=[held.txt]'], cwd });
    const folder = path.join(cwd, 'configs/sub');
    expect(config.model).toBe(path.join(cwd, 'configs/models/m'));
    expect(config.output).toBe(path.join(folder, 'out'));
    expect(config.data.train).toEqual([path.join(folder, 'a.txt'), path.join(cwd, 'configs/b.txt'), 'builtin:in-domain']);
    expect(config.data.calibration).toEqual([path.join(folder, 'cal.txt')]);
    expect(config.data.eval).toEqual([path.join(cwd, 'held.txt')]);
  });

  it('keeps a Hub id as written and treats an existing folder of the same shape as local', async () => {
    const cwd = tempFolder({ 'run.yaml': 'model: TinyLlama/TinyLlama_v1.1@main\ndata: { train: t.txt }\n', 'org/local/config.json': '{}' });
    expect((await resolveConfig({ file: 'run.yaml', cwd })).config.model).toBe('TinyLlama/TinyLlama_v1.1@main');
    expect((await resolveConfig({ file: 'run.yaml', overrides: ['model=org/local'], cwd })).config.model).toBe(path.join(cwd, 'org/local'));
    expect((await resolveConfig({ file: 'run.yaml', overrides: ['model=./org/absent'], cwd })).config.model).toBe(path.join(cwd, 'org/absent'));
  });

  it('a model path in a config file means the same model from any current directory', async () => {
    // `org/local` is not next to the file in cfg/, but is a folder of the current directory, where
    // the model argument's rule would have found it: refused, rather than a model that depends on the cwd.
    const cwd = tempFolder({ 'cfg/run.yaml': 'model: org/local\ndata: { train: t.txt }\n', 'cfg/near/run.yaml': 'model: cfg2/m\ndata: { train: t.txt }\n', 'cfg/near/cfg2/x': '', 'org/local/config.json': '{}' });
    await expect(resolveConfig({ file: 'cfg/run.yaml', cwd })).rejects.toThrow(/'org\/local' is not a folder next to the config file .*would be read as .*org\/local from the current directory/);
    // Its first part is a folder next to the file: a mistyped local path there, not a Hub id.
    await expect(resolveConfig({ file: 'cfg/near/run.yaml', cwd })).rejects.toThrow(/no such model folder .*cfg\/near\/cfg2\/m \(a path in a config file is relative to the file's folder\)/);
    // Run from the file's folder, the same value is a Hub id as before.
    expect((await resolveConfig({ file: 'run.yaml', cwd: path.join(cwd, 'cfg') })).config.model).toBe('org/local');
  });
});

describe('resolveConfig: overrides', () => {
  it('parses scalars as YAML: numbers, exponents, booleans, enums, null, sizes', async () => {
    const cwd = tempFolder({ 'run.yaml': 'model: ./m\ndata:\n  train: t.txt\n  eval_samples: 10\n' });
    const { config, sources } = await resolveConfig({
      file: 'run.yaml',
      overrides: ['stages.count=3', 'optimizer.lr=1e-4', 'stages.decay_k=true', 'backend=wasm', 'data.eval_samples=', 'max_memory=8GiB'],
      cwd,
    });
    expect(config.stages.count).toBe(3);
    expect(config.optimizer.lr).toBe(1e-4);
    expect(config.stages.decay_k).toBe(true);
    expect(config.backend).toBe('wasm');
    expect(config.data.eval_samples).toBeNull();
    expect(config.max_memory).toBe(8 * 2 ** 30);
    expect(sources['stages.count']).toBe('override');
    expect(sources['data.eval_samples']).toBe('override');
  });

  it('parses flow lists, and a later override of the same key wins', async () => {
    const cwd = tempFolder({ 'run.yaml': MINIMAL });
    const { config } = await resolveConfig({
      file: 'run.yaml',
      overrides: ['data.train=[a.txt,b.txt]', 'optimizer.betas=[0.8, 0.99]', 'stages.count=3', 'stages.count=4'],
      cwd,
    });
    expect(config.data.train).toEqual([path.join(cwd, 'a.txt'), path.join(cwd, 'b.txt')]);
    expect(config.optimizer.betas).toEqual([0.8, 0.99]);
    expect(config.stages.count).toBe(4);
  });

  it('merges a section override into the file section', async () => {
    const cwd = tempFolder({ 'run.yaml': `${MINIMAL}optimizer: { lr: 0.01, batch_size: 4 }\n` });
    const { config, sources } = await resolveConfig({ file: 'run.yaml', overrides: ['optimizer={batch_size: 16, grad_accum: 2}'], cwd });
    expect(config.optimizer).toMatchObject({ lr: 0.01, batch_size: 16, grad_accum: 2 });
    expect([sources['optimizer.lr'], sources['optimizer.batch_size']]).toEqual(['file', 'override']);
  });

  it('an empty section override puts the file section back to its defaults, so another setting or method can run', async () => {
    const cwd = tempFolder({ 'run.yaml': `${MINIMAL}setting: structured\nstructured: { tuned_attn_ratio: 0.7, train_embeddings: false }\nlora: null\n` });
    const full = await resolveConfig({ file: 'run.yaml', overrides: ['setting=full', 'structured='], cwd });
    expect([full.config.setting, full.config.structured]).toEqual(['full', null]);
    expect(full.sources['structured.tuned_attn_ratio']).toBe('default');
    // a key written after the clearing counts again
    const again = await resolveConfig({ file: 'run.yaml', overrides: ['structured=', 'structured.tuned_ffn_ratio=0.6'], cwd });
    expect(again.config.structured).toMatchObject({ tuned_attn_ratio: 0.5625, tuned_ffn_ratio: 0.6, train_embeddings: true });
    expect([again.sources['structured.tuned_attn_ratio'], again.sources['structured.tuned_ffn_ratio']]).toEqual(['default', 'override']);
    const lora = tempFolder({ 'run.yaml': `${MINIMAL}method: lora\nlora: { rank: 4 }\n` });
    expect((await resolveConfig({ file: 'run.yaml', overrides: ['method=apex', 'lora='], cwd: lora })).config.lora).toBeNull();
  });

  it('an override whose YAML fails only when read (an alias with no anchor) is a config error', async () => {
    await expect(resolveConfig({ overrides: ['stages.steps=*a'], cwd: tempFolder() })).rejects.toThrow(
      /override 'stages.steps=\*a': stages.steps: value is not valid YAML \(Unresolved alias/,
    );
  });

  it('overrides apply on top of the embedded default too', async () => {
    const { config } = await resolveConfig({ overrides: ['stages.count=3', 'seed=7'], cwd: tempFolder() });
    expect([config.stages.count, config.seed, config.data.train[0]]).toEqual([3, 7, 'builtin:out-of-domain']);
  });
});

describe('resolveConfig: dependent defaults', () => {
  it('a tokens budget replaces the default steps', async () => {
    const { config } = await resolveConfig({ overrides: ['stages.tokens=65536'], cwd: tempFolder() });
    expect([config.stages.steps, config.stages.tokens]).toEqual([null, 65536]);
  });

  it('a tokens budget may be written as apex finetune --tokens takes it (3M, 500k, 2.5B)', async () => {
    for (const [text, tokens] of [['3M', 3_000_000], ['500k', 500_000], ['2.5B', 2_500_000_000], ['65536', 65536]] as const) {
      const { config } = await resolveConfig({ overrides: [`stages.tokens=${text}`], cwd: tempFolder() });
      expect(config.stages.tokens).toBe(tokens);
    }
  });

  it('0 turns off clipping, periodic checkpoints and periodic evaluation, as --grad-clip 0, --save-every 0 and --eval-every 0 do', async () => {
    const { config } = await resolveConfig({ overrides: ['optimizer.grad_clip=0', 'checkpoint.every=0', 'eval.every=0'], cwd: tempFolder() });
    expect([config.optimizer.grad_clip, config.checkpoint.every, config.eval.every]).toEqual([0, 0, 0]);
  });

  it('an explicit null tokens with explicit steps is the printed form and is accepted', async () => {
    const { config } = await resolveConfig({ overrides: ['stages.steps=5', 'stages.tokens=null'], cwd: tempFolder() });
    expect([config.stages.steps, config.stages.tokens]).toEqual([5, null]);
  });

  it('method vanilla: no setting, no sections, no second vanilla baseline', async () => {
    const { config } = await resolveConfig({ overrides: ['method=vanilla'], cwd: tempFolder() });
    expect([config.setting, config.structured, config.lora, config.baseline.vanilla]).toEqual([null, null, null, false]);
  });

  it('setting structured fills the reference 52% recipe', async () => {
    const { config } = await resolveConfig({ overrides: ['setting=structured'], cwd: tempFolder() });
    expect(config.structured).toEqual({ tuned_attn_ratio: 0.5625, tuned_ffn_ratio: 0.465, train_embeddings: true });
    expect(config.lora).toBeNull();
  });

  it('method lora: alpha defaults to 2 · rank; match_params leaves rank and alpha to the run', async () => {
    const cwd = tempFolder();
    expect((await resolveConfig({ overrides: ['method=lora', 'lora.rank=16'], cwd })).config.lora).toEqual({ rank: 16, alpha: 32, match_params: null });
    expect((await resolveConfig({ overrides: ['method=lora', 'lora.rank=16', 'lora.alpha=8'], cwd })).config.lora).toEqual({ rank: 16, alpha: 8, match_params: null });
    // written as null, derived by the rules: a default, not an override (--print-config marks it so)
    const derived = await resolveConfig({ overrides: ['method=lora', 'lora.rank=16', 'lora.alpha='], cwd });
    expect([derived.config.lora!.alpha, derived.sources['lora.alpha'], derived.sources['lora.rank']]).toEqual([32, 'default', 'override']);
    expect((await resolveConfig({ overrides: ['method=lora', 'lora.match_params=runs/apex'], cwd })).config.lora).toEqual({
      rank: null,
      alpha: null,
      match_params: path.join(cwd, 'runs/apex'),
    });
    expect((await resolveConfig({ overrides: ['method=lora'], cwd })).config.setting).toBeNull();
  });

  it('setting: null with method apex means the default', async () => {
    expect((await resolveConfig({ overrides: ['setting=null'], cwd: tempFolder() })).config.setting).toBe('full');
  });
});
