/**
 * `apex eval <model>`: mean next-token NLL and perplexity of a model on data, with the
 * layer-streaming forward pass (memory about one layer, whatever the depth).
 */
import { Args, Flags } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { UsageError, VerificationError } from '../errors.js';
import { parseByteSize } from '../io/byte-size.js';
import { BACKEND_ORDER, type BackendName } from '../model/backend.js';
import { openModelForCompute } from '../model/open-model.js';
import { contextWarning, evaluateNll } from '../model/streaming-forward.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { BUILTIN_CORPORA, dataSourceName, loadSequences, type DataSpecRecord, type SplitName } from '../train/data.js';
import { MAX_SEED } from '../util/rng.js';

export interface EvalResult {
  model: string;
  modelDir: string;
  backend: BackendName;
  backendDetail: string;
  /** Mean NLL over the scored tokens, and exp of it. */
  meanNll: number;
  perplexity: number;
  /** Tokens scored: the loss targets (every position after the first; for chat, the assistant's tokens). */
  tokens: number;
  sequences: number;
  seqLen: number;
  /** Sequence positions run through the model (sequences × seqLen, padding included). */
  positions: number;
  chunkSequences: number;
  seconds: number;
  /** positions / seconds: the forward pass's throughput. */
  tokensPerSecond: number;
  /** What was read; its `tokens` are the real (unpadded) tokens of the sequences. */
  data: DataSpecRecord;
}

export default class Eval extends ApexCommand<EvalResult> {
  static override description = 'Mean next-token NLL and perplexity of a model on text or token ids.';
  static override examples = [
    '<%= config.bin %> eval ./my-model --data notes/ --seq-len 256 --samples 64',
    '<%= config.bin %> eval ./stories260K --input-ids calib.safetensors --json',
  ];
  static override args = { model: Args.string({ description: 'Model folder or Hugging Face repo id (org/name[@revision]).', required: true }) };
  static override flags = {
    data: Flags.string({ description: 'Data: text files or folders, JSONL or .json of "text" or chat "messages" records (README: Data).', multiple: true, exclusive: ['input-ids', 'corpus'] }),
    'input-ids': Flags.string({ description: 'Pre-tokenized ids: a safetensors file with one I32/I64 [B, T] tensor, or input_ids with a right-padding attention_mask.', exclusive: ['data', 'corpus'] }),
    corpus: Flags.string({ description: 'Built-in corpus used when no data is given.', options: [...BUILTIN_CORPORA], default: 'in-domain' }),
    'seq-len': Flags.integer({ description: 'Tokens per sequence.', default: 128, min: 2 }),
    'batch-size': Flags.integer({ description: 'Sequences per forward chunk (fewer when --max-memory requires).', default: 8, min: 1 }),
    samples: Flags.integer({ description: 'Evaluate a seeded sample of this many sequences (default: all).', min: 1 }),
    seed: Flags.integer({ description: 'Seed of the --samples sample (refused without --samples).', default: 0, min: 0, max: MAX_SEED }),
    split: Flags.string({ description: 'Which documents: all, or the training / held-out part of the seeded split apex finetune and apex run make of their data (to reproduce their held-out perplexity: --split heldout with their split seed, and --samples/--seed as their eval samples).', options: ['all', 'train', 'heldout'], default: 'all' }),
    'split-seed': Flags.integer({ description: 'Seed of the split of --split heldout or train (apex finetune: 0; apex run: its config seed).', default: 0, min: 0, max: MAX_SEED }),
    backend: Flags.string({ description: 'TensorFlow.js backend.', options: ['auto', ...BACKEND_ORDER], default: 'auto' }),
    'max-memory': Flags.string({ description: 'Memory budget for weights and activations, e.g. 2GiB.', default: '4GiB' }),
  };

  protected async execute(): Promise<EvalResult> {
    const { args, flags } = await this.parse(Eval);
    // Without a split the seed of one changes nothing: say so rather than report the perplexity
    // of all the data to someone reproducing a run's held-out figure who forgot --split heldout.
    if (flags['split-seed'] !== 0 && flags.split === 'all') {
      throw new UsageError(`--split-seed ${flags['split-seed']} only applies with --split heldout or --split train (the documents of that seeded split); --split all evaluates all the data`);
    }
    // Likewise a sample's seed without a sample.
    if (flags.seed !== 0 && flags.samples === undefined) {
      throw new UsageError(`--seed ${flags.seed} only applies with --samples (it draws that sample); without it every sequence is evaluated`);
    }
    const maxMemoryBytes = parseByteSize(flags['max-memory'], '--max-memory');
    const opened = await openModelForCompute(args.model, { backend: flags.backend as BackendName | 'auto', signal: this.abort.signal, progress: (m) => this.progress.update(m) });
    try {
      opened.warnings.forEach((w) => this.note(w));
      const tokenizer = flags['input-ids'] ? undefined : await loadTokenizer(opened.resolved.dir);
      const set = await loadSequences({
        ...(flags.data ? { data: flags.data } : flags['input-ids'] ? { inputIds: flags['input-ids'] } : { builtin: flags.corpus }),
        ...(tokenizer ? { tokenizer } : {}),
        seqLen: flags['seq-len'],
        ...(flags.samples !== undefined ? { samples: flags.samples } : {}),
        seed: flags.seed,
        split: flags.split as SplitName,
        splitSeed: flags['split-seed'],
        onWarning: (m) => this.note(m),
        onProgress: (m) => this.progress.update(m),
        signal: this.abort.signal,
      });
      const beyondContext = contextWarning(opened.spec, Math.max(...set.sequences.map((s) => s.length)));
      if (beyondContext) this.note(`${beyondContext}; lower --seq-len to measure the model within its context`);
      const started = performance.now();
      const result = await evaluateNll(opened.source, set.sequences, {
        dataName: dataSourceName(set.source),
        batchSize: flags['batch-size'],
        maxMemoryBytes,
        ...(set.lossMasks ? { lossMasks: set.lossMasks } : {}),
        signal: this.abort.signal,
        onProgress: (p) => this.progress.update(`${p.stage === 'layer' ? 'layer' : 'lm_head block'} ${p.done}/${p.total}`),
      });
      if (!Number.isFinite(result.meanNll)) {
        throw new VerificationError(`the model's log-probabilities are not finite (mean NLL ${result.meanNll}): a weight holds NaN/Inf or the forward pass overflows`, 'NON_FINITE_LOSS');
      }
      const seconds = (performance.now() - started) / 1000;
      this.progress.stop();
      const processed = set.sequences.reduce((a, s) => a + s.length, 0);
      this.say(`mean NLL ${result.meanNll.toFixed(4)}  perplexity ${result.perplexity.toFixed(3)}  (${result.tokens} targets in ${set.sequences.length} × ${set.seqLen} tokens)`);
      this.say(`backend ${opened.backend.name}, ${seconds.toFixed(1)} s, ${(processed / seconds).toFixed(0)} tokens/s`);
      return {
        model: args.model,
        modelDir: opened.resolved.dir,
        backend: opened.backend.name,
        backendDetail: opened.backend.detail,
        meanNll: result.meanNll,
        perplexity: result.perplexity,
        tokens: result.tokens,
        sequences: set.sequences.length,
        seqLen: set.seqLen,
        positions: processed,
        chunkSequences: result.plan.chunkSequences,
        seconds,
        tokensPerSecond: processed / seconds,
        data: set.source,
      };
    } finally {
      await opened.checkpoint.close();
    }
  }
}
