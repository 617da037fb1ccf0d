/**
 * `apex generate <model>`: greedy or sampled continuation of text prompts (plain, or user turns
 * rendered by the chat template) or of token ids;
 * prints text (when the model has a tokenizer) and ids, and can save the ids as an
 * `--input-ids` file (calibration data for a model without a tokenizer).
 */
import { join } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { ApexCommand } from '../cli/base-command.js';
import { UsageError } from '../errors.js';
import { formatBytes, parseByteSize } from '../io/byte-size.js';
import { i32Tensor, writeSafetensors } from '../io/safetensors-writer.js';
import { BACKEND_ORDER, type BackendName } from '../model/backend.js';
import { generate, rowSeed } from '../model/generate.js';
import { generationEosIds, generationSampling } from '../model/generation-config.js';
import { checkTokens, contextWarning } from '../model/streaming-forward.js';
import { openGenerationSource, planGeneration, promptGroups } from '../model/generation-source.js';
import { rendererFor } from '../model/chat-template.js';
import { openModelForCompute } from '../model/open-model.js';
import { buildPrompts, paddedIds } from '../model/prompts.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { MAX_SEED } from '../util/rng.js';
import { checkOutputFile, makeOutputFileFolder } from '../io/output-file.js';

export interface GenerateCommandResult {
  model: string;
  backend: BackendName;
  backendDetail: string;
  /** Whether all weights were held in memory (else streamed from disk every step). */
  resident: boolean;
  /** generate calls run one after another: one per prompt length, split where memory asks. */
  batches: number;
  /** How tokens were chosen (temperature 0: greedy), and whether the flags or generation_config.json said so. */
  sampling: { temperature: number; topK: number; topP: number; seed: number; from: 'flags' | 'generation_config' | 'default' };
  sequences: { ids: number[]; generatedIds: number[]; text?: string; generatedText?: string; stopped: boolean }[];
  idsOut?: string;
  seconds: number;
  tokensPerSecond: number;
}

export default class Generate extends ApexCommand<GenerateCommandResult> {
  static override description = 'Continue prompts (texts, chat turns or token ids) greedily or by sampling, up to --max-new-tokens or an end-of-sequence id of config.json, generation_config.json or the tokenizer.';
  static override examples = [
    '<%= config.bin %> generate ./my-model --prompt "The president said" --max-new-tokens 40',
    '<%= config.bin %> generate ./apex-runs/tinyllama-structured/stages/2/model --chat --prompt "Name three prime numbers." --prompt "What is a Monarch matrix?"',
    '<%= config.bin %> generate ./stories260K --max-new-tokens 127 --temperature 1 --seed 3 --ids-out calib.safetensors',
  ];
  static override args = { model: Args.string({ description: 'Model folder or Hugging Face repo id (org/name[@revision]).', required: true }) };
  static override flags = {
    prompt: Flags.string({ description: 'Prompt text (needs the model\'s tokenizer); repeat the flag for several prompts. Default: just the BOS token.', exclusive: ['input-ids'], multiple: true, multipleNonGreedy: true }),
    chat: Flags.boolean({ description: 'Give each --prompt as a user turn, rendered by the model\'s chat template (tokenizer_config.json chat_template or chat_template.jinja; without one, the Tulu format apex trains chat data with) and followed by the opening of the assistant\'s turn: the generated text is the answer.', dependsOn: ['prompt'] }),
    system: Flags.string({ description: 'A system message before each --chat prompt.', dependsOn: ['chat'] }),
    'input-ids': Flags.string({ description: 'Prompts as token ids: one I32/I64 [B, T] safetensors tensor, or input_ids with a right-padding attention_mask (each row one prompt, up to its mask).' }),
    'max-new-tokens': Flags.integer({ description: 'Tokens to generate per prompt.', default: 64, min: 0 }),
    temperature: Flags.string({ description: 'Sampling temperature; 0 = greedy. Without it: what the model\'s generation_config.json asks for (do_sample, temperature, top_k, top_p, as Hugging Face generate), else greedy; with it, --top-k and --top-p (defaults 0 and 1) and not the file.' }),
    'top-p': Flags.string({ description: 'Nucleus sampling: keep the most likely tokens up to this probability mass (default 1, or generation_config.json\'s when it decides the sampling).' }),
    'top-k': Flags.integer({ description: 'Sample only among the k most likely tokens (applied before --top-p); 0 = off (default 0, or generation_config.json\'s when it decides the sampling).', min: 0 }),
    seed: Flags.integer({ description: 'Sampling seed. Each prompt samples from its own stream, derived from the seed and the prompt\'s position (the first prompt uses the seed itself), so its tokens do not depend on how the prompts are batched or split for memory.', default: 0, min: 0, max: MAX_SEED }),
    'ids-out': Flags.string({ description: 'Write prompt + generated ids as I32 [B, T] tensors `input_ids` and `attention_mask` (0 where a row that stopped early is padded) to this safetensors file; usable as --input-ids. An existing file is replaced only with --force.' }),
    force: Flags.boolean({ description: 'Replace an existing --ids-out file.' }),
    backend: Flags.string({ description: 'TensorFlow.js backend.', options: ['auto', ...BACKEND_ORDER], default: 'auto' }),
    'max-memory': Flags.string({ description: 'Hold all weights in memory only below this budget (else stream layers every step); prompts whose key/value cache does not fit beside them run in smaller batches.', default: '4GiB' }),
  };

  protected async execute(): Promise<GenerateCommandResult> {
    const { args, flags } = await this.parse(Generate);
    // Number('') is 0 and Number('0x10') 16: only plain decimal numbers are read as numbers.
    const decimal = (text: string) => (/^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(text) ? Number(text) : Number.NaN);
    const flagTemperature = flags.temperature === undefined ? undefined : decimal(flags.temperature);
    const flagTopP = flags['top-p'] === undefined ? undefined : decimal(flags['top-p']);
    if (flagTemperature !== undefined && (!Number.isFinite(flagTemperature) || flagTemperature < 0)) throw new UsageError(`--temperature must be a number ≥ 0, got '${flags.temperature}'`);
    if (flagTopP !== undefined && !(flagTopP > 0 && flagTopP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got '${flags['top-p']}'`);
    const budget = parseByteSize(flags['max-memory'], '--max-memory');
    const opened = await openModelForCompute(args.model, { backend: flags.backend as BackendName | 'auto', signal: this.abort.signal, progress: (m) => this.progress.update(m) });
    try {
      // The flags when --temperature is given, else the model's generation_config.json (as Hugging Face
      // generate), else greedy. A file whose sampling values are broken matters only when it is used.
      const fromModel = flagTemperature !== undefined ? undefined : await generationSampling(opened.resolved.dir);
      const temperature = flagTemperature ?? fromModel?.temperature ?? 0;
      const topP = flagTopP ?? fromModel?.topP ?? 1;
      const topK = flags['top-k'] ?? fromModel?.topK ?? 0;
      if (fromModel !== undefined) {
        this.note(`sampling as the model's generation_config.json asks (temperature ${temperature}, top-k ${topK}, top-p ${topP}); --temperature 0 decodes greedily`);
      }
      if (temperature === 0 && (topK > 0 || topP !== 1)) this.note('--temperature 0 decodes greedily: --top-k and --top-p have no effect');
      // Checked before generating: a mistyped path must neither cost the run nor overwrite a model file.
      const idsOut = flags['ids-out'] === undefined ? undefined : checkOutputFile(flags['ids-out'], { flag: '--ids-out', protectedFolders: [{ label: 'the model folder', path: opened.resolved.dir }], force: flags.force });
      opened.warnings.forEach((w) => this.note(w));
      const tokenizer = await loadTokenizer(opened.resolved.dir);
      const renderer = flags.chat && tokenizer ? rendererFor(tokenizer) : undefined;
      if (renderer?.isFallback) this.note('the model has no chat template (tokenizer_config.json chat_template or chat_template.jinja): rendering --chat prompts in the Tulu format apex trains chat data with');
      const prompts = await buildPrompts({
        ...(flags.prompt !== undefined ? { prompts: flags.prompt } : {}),
        ...(flags['input-ids'] ? { inputIds: flags['input-ids'] } : {}),
        ...(tokenizer ? { tokenizer } : {}),
        ...(renderer ? { chat: { renderer, ...(flags.system !== undefined ? { system: flags.system } : {}) } } : {}),
        spec: opened.spec,
      });
      // Every prompt checked here, by its index and with its source: generate() checks each batch
      // again, but knows neither.
      checkTokens(opened.spec, prompts, flags['input-ids'] ?? (flags.prompt !== undefined ? `--prompt, as ${join(opened.resolved.dir, 'tokenizer.json')} tokenizes it` : undefined));
      // Stop on every end-of-sequence id the model declares: config.json, generation_config.json (where
      // Hugging Face generate looks, and instruction-tuned models list end-of-turn tokens) and the tokenizer.
      const stops = [...new Set([...opened.spec.eosTokenIds, ...(await generationEosIds(opened.resolved.dir)), ...(tokenizer?.eosId !== undefined ? [tokenizer.eosId] : [])])];
      const P = Math.max(...prompts.map((p) => p.length));
      const beyondContext = contextWarning(opened.spec, P + flags['max-new-tokens'], 'prompt plus new tokens');
      if (beyondContext) this.note(`${beyondContext}; text past it is likely to degrade`);
      const groups = promptGroups(prompts);
      const plan = planGeneration(opened.spec, groups, flags['max-new-tokens'], budget, opened.backend.name);
      if (!plan.resident) this.note(`the model needs about ${formatBytes(plan.residentBytes)} in memory, above --max-memory or what the backend holds: streaming its layers from disk at every step (slow)`);
      if (plan.rowsPerBatch < Math.max(...[...groups.values()].map((rows) => rows.length))) {
        this.note(`running at most ${plan.rowsPerBatch} prompt${plan.rowsPerBatch === 1 ? '' : 's'} at a time (${plan.batches.length} batches): the key/value cache and activations of more do not fit ${plan.resident ? '--max-memory beside the weights' : "the backend's memory"}`);
      }
      const chosen = await openGenerationSource(opened.checkpoint, opened.spec, plan);
      const started = performance.now();
      // Batches of one prompt length (promptGroups), split where memory asks (planGeneration); every
      // prompt samples from its own seed, so the split does not change any prompt's tokens.
      const out = { sequences: new Array<Int32Array>(prompts.length), generated: new Array<Int32Array>(prompts.length), stopped: new Array<boolean>(prompts.length) };
      try {
        let g = 0;
        for (const { length, rows } of plan.batches) {
          const part = await generate(chosen.source, rows.map((i) => prompts[i]!), {
            maxNewTokens: flags['max-new-tokens'], temperature, topP, topK, seeds: rows.map((i) => rowSeed(flags.seed, i)), stopTokenIds: stops, signal: this.abort.signal,
            onStep: (s, n) => this.progress.update(plan.batches.length > 1 ? `batch ${g + 1}/${plan.batches.length} (${rows.length} prompt${rows.length === 1 ? '' : 's'} of ${length} tokens): token ${s}/${n}` : `token ${s}/${n}`),
          });
          rows.forEach((i, k) => {
            out.sequences[i] = part.sequences[k]!;
            out.generated[i] = part.generated[k]!;
            out.stopped[i] = part.stopped[k]!;
          });
          g++;
        }
      } finally {
        chosen.dispose();
      }
      const seconds = (performance.now() - started) / 1000;
      this.progress.stop();
      const sequences = out.sequences.map((ids, b) => ({
        ids: Array.from(ids),
        generatedIds: Array.from(out.generated[b]!),
        ...(tokenizer ? { text: tokenizer.decode(ids), generatedText: tokenizer.decode(out.generated[b]!) } : {}),
        stopped: out.stopped[b]!,
      }));
      for (const s of sequences) this.say(s.text !== undefined ? `${s.text}\n[ids] ${s.ids.join(' ')}` : s.ids.join(' '));
      if (idsOut !== undefined) {
        const { ids, attentionMask, shape } = paddedIds(out.sequences, tokenizer?.padId ?? opened.spec.padTokenId ?? stops[0] ?? 0);
        await makeOutputFileFolder(idsOut);
        await writeSafetensors(idsOut, [i32Tensor('input_ids', shape, ids), i32Tensor('attention_mask', shape, attentionMask)]);
        this.say(`wrote ${shape[0]} × ${shape[1]} ids to ${idsOut}`);
      }
      const generatedCount = out.generated.reduce((a, g) => a + g.length, 0);
      return {
        model: args.model, backend: opened.backend.name, backendDetail: opened.backend.detail, resident: chosen.resident, batches: plan.batches.length,
        sampling: { temperature, topK, topP, seed: flags.seed, from: flagTemperature !== undefined ? 'flags' : fromModel !== undefined ? 'generation_config' : 'default' },
        sequences,
        ...(idsOut !== undefined ? { idsOut } : {}), seconds, tokensPerSecond: generatedCount / seconds,
      };
    } finally {
      await opened.checkpoint.close();
    }
  }
}
