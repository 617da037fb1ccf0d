/**
 * `apex analyze <model> -o <dir>`: the APEX advantage assessment (APEX-METHOD §2): which
 * attention heads and FFN channels of every layer are advantageous (P) and disadvantageous (N)
 * on calibration data, with statistics, optional effective ranks, and an HTML report. The work
 * is in pipeline/analyze.ts.
 */
import { join } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { UsageError } from '../errors.js';
import { parseByteSize } from '../io/byte-size.js';
import { resolveModel } from '../io/resolve-model.js';
import { BACKEND_ORDER } from '../model/backend.js';
import { loadTokenizer } from '../model/tokenizer.js';
import type { ScoreMode } from '../ops/selection.js';
import { analysisSettings, runAnalysis, type AnalysisOptions } from '../pipeline/analyze.js';
import { analysisCommandResult, type AnalysisCommandResult } from '../pipeline/analysis-json.js';
import { BUILTIN_CORPORA, loadSequences } from '../train/data.js';
import { MAX_SEED } from '../util/rng.js';

export default class Analyze extends ApexCommand<AnalysisCommandResult> {
  static override description = 'Find the advantageous and disadvantageous heads and FFN channels of every layer (APEX advantage assessment) and write analysis.json, stats.safetensors and an HTML report.';
  static override examples = [
    '<%= config.bin %> analyze ./my-model -o runs/a/analysis',
    '<%= config.bin %> analyze ./stories260K --input-ids calib.safetensors --batch-size 4 -o out/analysis --erank',
    '<%= config.bin %> analyze ./tuned --base ./my-model --erank --data notes/ -o out/analysis --json',
  ];
  static override args = { model: Args.string({ description: 'Model folder or Hugging Face repo id (org/name[@revision]).', required: true }) };
  static override flags = {
    output: Flags.string({ char: 'o', description: 'Analysis folder to write (refused when it exists, unless --force).', required: true }),
    data: Flags.string({ description: 'Calibration data: text files or folders, JSONL or .json of "text" or chat "messages" records (README: Data).', multiple: true, exclusive: ['input-ids', 'corpus'] }),
    'input-ids': Flags.string({ description: 'Pre-tokenized calibration ids: a safetensors file with one I32/I64 [B, T] tensor, or input_ids with a right-padding attention_mask.', exclusive: ['data', 'corpus'] }),
    corpus: Flags.string({ description: 'Built-in corpus used when no data is given (needs the model\'s tokenizer).', options: [...BUILTIN_CORPORA], default: 'in-domain' }),
    samples: Flags.integer({ description: 'Calibration sequences (a seeded sample; the paper used 12,288).', default: 64, min: 1 }),
    'seq-len': Flags.integer({ description: 'Tokens per sequence.', default: 128, min: 2 }),
    'batch-size': Flags.integer({ description: 'Sequences per micro-batch (the unit of rank counting).', default: 8, min: 1 }),
    seed: Flags.integer({ description: 'Seed of the data sample and of --random-selection.', default: 0, min: 0, max: MAX_SEED }),
    ratio: Flags.string({ description: 'Selection ratio: k = floor(n · ratio / 2) units per side and layer.', default: '0.375' }),
    score: Flags.string({ description: 'rank: Top-k/Min-k counts (the method); avg: the units\' norms summed over the data (the ablation; stored as averages, which rank the same).', options: ['rank', 'avg'], default: 'rank' }),
    'decay-k': Flags.boolean({ description: 'Decaying K: k = floor(n · ratio / 2^stage).', default: false }),
    stage: Flags.integer({ description: 'Stage index for --decay-k.', default: 1, min: 1 }),
    'random-selection': Flags.boolean({ description: 'Ablation: seeded shuffle of the scores before selecting.', default: false }),
    reverse: Flags.boolean({ description: 'Ablation: swap P and N.', default: false }),
    erank: Flags.boolean({ description: 'Effective rank of every q/k/v/o/gate/up/down matrix (float64 SVD; slow on large models).', default: false }),
    base: Flags.string({ description: 'Base model: with --erank, also the effective rank of ΔW = W − W_base.' }),
    'dump-stats': Flags.string({ description: 'Write per-sequence head_sumsq [L,B,H] and gate_act_sumsq [L,B,I] to this safetensors file (an existing file only with --force).' }),
    backend: Flags.string({ description: 'TensorFlow.js backend.', options: ['auto', ...BACKEND_ORDER], default: 'auto' }),
    'max-memory': Flags.string({ description: 'Refuse to start when the memory estimate exceeds this (e.g. 2GiB); also the forward pass\'s budget (default 4GiB).' }),
    force: Flags.boolean({ description: 'Replace an existing output folder.', default: false }),
  };

  protected async execute(): Promise<AnalysisCommandResult> {
    const { args, flags } = await this.parse(Analyze);
    const ratio = Number(flags.ratio);
    if (!/^\s*[0-9.eE+-]+\s*$/.test(flags.ratio)) throw new UsageError(`--ratio must be a number in (0, 1], got '${flags.ratio}'`);
    const settings: Omit<AnalysisOptions, 'model' | 'output' | 'data'> = {
      batchSize: flags['batch-size'], ratio, seed: flags.seed, backend: flags.backend, score: flags.score as ScoreMode,
      decayK: flags['decay-k'], stage: flags.stage, randomSelection: flags['random-selection'], reverse: flags.reverse, erank: flags.erank,
      ...(flags.base !== undefined ? { base: flags.base } : {}),
      ...(flags['dump-stats'] !== undefined ? { dumpStats: flags['dump-stats'] } : {}),
      ...(flags['max-memory'] !== undefined ? { maxMemory: parseByteSize(flags['max-memory'], '--max-memory') } : {}),
      force: flags.force,
    };
    analysisSettings(settings);
    const progress = (m: string) => this.progress.update(m);
    const resolved = await resolveModel(args.model, { progress, signal: this.abort.signal });
    const base = flags.base !== undefined ? (await resolveModel(flags.base, { progress, signal: this.abort.signal })).dir : undefined;
    const tokenizer = flags['input-ids'] ? undefined : await loadTokenizer(resolved.dir);
    const data = await loadSequences({
      ...(flags.data ? { data: flags.data } : flags['input-ids'] ? { inputIds: flags['input-ids'] } : { builtin: flags.corpus }),
      ...(tokenizer ? { tokenizer } : {}),
      seqLen: flags['seq-len'],
      samples: flags.samples,
      seed: flags.seed,
      onWarning: (m) => this.note(m),
      onProgress: progress,
      signal: this.abort.signal,
    });
    const result = await runAnalysis({
      ...settings,
      model: resolved.dir,
      output: flags.output,
      data,
      ...(base !== undefined ? { base } : {}),
      signal: this.abort.signal,
      progress,
      log: (m) => this.progress.info(m),
      onWarning: (m) => this.note(m),
    });
    this.progress.stop();
    if (this.jsonEnabled()) this.progress.info(result.summary);
    else this.say(result.summary);
    this.say(`report: ${join(result.output, 'index.html')}`);
    return analysisCommandResult(result.analysis, result.output, result.memory.totalBytes, result.dumpStats);
  }
}
