/**
 * The micro configurations the crash harness kills: `apex expand` fusing a trained stage of
 * llama-mha-f32 into a new folder, `apex finetune` training one structured APEX stage (8 steps,
 * a checkpoint every 2, then the fused model), and `apex run` with two stages and the vanilla
 * baseline (4 steps a stage). Each scenario says how to prepare shared inputs, the command
 * line writing into a fresh folder, how to continue after a kill, and which final artefacts
 * must equal those of an uninterrupted run. `quick` variants (for npm test) train 4 steps in
 * finetune and leave out the baseline in run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtinCorpus } from '../../src/train/data.js';
import { ROOT, runApex } from './crash-process.js';

export const MODEL = join(ROOT, 'fixtures', 'llama-mha-f32');

export type ScenarioName = 'expand' | 'finetune' | 'run';

export interface Scenario {
  readonly name: ScenarioName;
  /** Inputs shared by every kill point, prepared once under `base`. */
  prepare(base: string): Promise<void>;
  /** The command writing into the fresh folder `dir`. */
  args(base: string, dir: string): string[];
  /** The command that continues after a kill. */
  rerunArgs(base: string, dir: string): string[];
  /** Whether the continuation's exit is a success (expand refuses an output that is already complete). */
  rerunOk(status: number | null, stdout: string): boolean;
  /** Final artefacts (relative to `dir`) that must equal an uninterrupted run's within 1e-6. */
  readonly tensors: readonly string[];
  /** metrics.jsonl files (relative to `dir`) whose steps and losses must equal an uninterrupted run's. */
  readonly metrics: readonly string[];
}

const TRAIN_FLAGS = ['--corpus', 'in-domain', '--seq-len', '32', '--samples', '8', '--eval-samples', '2', '--batch-size', '2', '--lr', '1e-3', '--backend', 'wasm', '--seed', '3'];

const expand: Scenario = {
  name: 'expand',
  async prepare(base) {
    mkdirSync(base, { recursive: true });
    const r = await runApex(['finetune', MODEL, '-o', join(base, 'source'), ...TRAIN_FLAGS, '--steps', '2', '--no-expand'], { cwd: base, home: join(base, 'hf-home') });
    if (r.status !== 0) throw new Error(`preparing the expand inputs failed (${r.status}): ${r.stderr}`);
  },
  args: (base, dir) => [
    'expand', MODEL,
    '--operators', join(base, 'source', 'stages', '1', 'operators.safetensors'),
    '--updates', join(base, 'source', 'stages', '1', 'trained.safetensors'),
    '-o', join(dir, 'out'),
  ],
  rerunArgs: (base, dir) => expand.args(base, dir),
  rerunOk: (status, stdout) => status === 0 || (status === 2 && stdout.includes('already exists')),
  tensors: ['out'],
  metrics: [],
};

function finetune(steps: number): Scenario {
  const args = (dir: string) => ['finetune', MODEL, '-o', join(dir, 'run'), ...TRAIN_FLAGS, '--steps', String(steps), '--save-every', '2'];
  return {
    name: 'finetune',
    async prepare(base) {
      mkdirSync(base, { recursive: true });
    },
    args: (_base, dir) => args(dir),
    rerunArgs: (_base, dir) => [...args(dir), '--resume'],
    rerunOk: (status) => status === 0,
    tensors: ['run/stages/1/operators.safetensors', 'run/stages/1/trained.safetensors', 'run/stages/1/scores.safetensors', 'run/stages/1/model'],
    metrics: ['run/stages/1/metrics.jsonl'],
  };
}

/** Two stages (and the vanilla baseline) on five short chapters, seconds per run on wasm. */
function runConfig(baseline: boolean): string {
  return [
    `model: ${MODEL}`,
    'backend: wasm',
    'seed: 3',
    'data:',
    `  train: [${builtinCorpus('out-of-domain').slice(2, 7).join(', ')}]`,
    '  seq_len: 32',
    '  eval_samples: 6',
    '  calibration_samples: 8',
    'stages: { count: 2, steps: 4 }',
    'optimizer: { lr: 0.001, batch_size: 4 }',
    'eval: { every: null, batch_size: 6 }',
    'checkpoint: { every: 2 }',
    `baseline: { vanilla: ${baseline} }`,
    '',
  ].join('\n');
}

function run(baseline: boolean): Scenario {
  const args = (base: string, dir: string) => ['run', join(base, 'run.yaml'), '-o', join(dir, 'run')];
  const vanilla = baseline ? ['run/baseline/vanilla/stages/2/model'] : [];
  return {
    name: 'run',
    async prepare(base) {
      mkdirSync(base, { recursive: true });
      writeFileSync(join(base, 'run.yaml'), runConfig(baseline));
    },
    args,
    rerunArgs: args,
    rerunOk: (status) => status === 0,
    tensors: ['run/stages/1/model', 'run/stages/2/model', 'run/stages/2/operators.safetensors', ...vanilla],
    metrics: ['run/stages/1/metrics.jsonl', 'run/stages/2/metrics.jsonl', ...(baseline ? ['run/baseline/vanilla/stages/2/metrics.jsonl'] : [])],
  };
}

export function scenarios(options: { quick?: boolean } = {}): Readonly<Record<ScenarioName, Scenario>> {
  return options.quick ? { expand, finetune: finetune(4), run: run(false) } : { expand, finetune: finetune(8), run: run(true) };
}
