/**
 * A LoRA stage's adapter in the layout of Hugging Face PEFT (`adapter/adapter_model.safetensors`
 * and `adapter/adapter_config.json`), so the trained factors can be loaded with
 * `PeftModel.from_pretrained(base, "<stage>/adapter")` besides the merged model apex writes.
 *
 * PEFT names a factor by the module path inside `PeftModelForCausalLM` without the adapter name:
 * `base_model.model.<weight name without .weight>.lora_A.weight` ([r, in]) and `….lora_B.weight`
 * ([out, r]); apex's factors have those shapes and the same update W + (α/r)·B·A (lora.ts).
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseRepoArgument, type ResolvedModel } from '../io/resolve-model.js';

export const ADAPTER_DIR = 'adapter';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_CARD_FILE = 'README.md';

/** PEFT's tensor name of a factor of the projection whose weight is `weightName` (`model.layers.0.self_attn.q_proj.weight`). */
export function peftTensorName(weightName: string, factor: 'A' | 'B'): string {
  return `base_model.model.${weightName.replace(/\.weight$/, '')}.lora_${factor}.weight`;
}

export interface PeftAdapter {
  readonly rank: number;
  readonly alpha: number;
  /** The modules adapted (q_proj, …, down_proj). */
  readonly targetModules: readonly string[];
  /** The weights the factors apply to: a Hub repo (with the commit trained from, or the revision named, or none) or a folder. */
  readonly base: { readonly repo: string; readonly revision: string | null } | { readonly folder: string };
  /** Factors by PEFT tensor name. */
  readonly tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly values: Float32Array }>;
}

/** adapter_config.json as PEFT's LoraConfig reads it (the fields apex's LoRA decides; PEFT fills the rest with its defaults). */
export function peftAdapterConfig(a: PeftAdapter): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: 'repo' in a.base ? a.base.repo : a.base.folder,
    revision: 'repo' in a.base ? a.base.revision : null,
    r: a.rank,
    lora_alpha: a.alpha,
    lora_dropout: 0,
    target_modules: [...a.targetModules],
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    modules_to_save: null,
    inference_mode: true,
  };
}

/**
 * What a LoRA stage's adapter applies to: stage 1's model as the user named it (a Hub repo and
 * its revision, or the folder), a later stage's the previous stage's fused model folder.
 */
export function adapterBase(stage: number, model: string, inputDir: string, source?: Pick<ResolvedModel, 'source' | 'repo' | 'revision' | 'commit'>): PeftAdapter['base'] {
  if (stage > 1) return { folder: resolve(inputDir) };
  if (source !== undefined) {
    if (source.source === 'local' || source.repo === undefined) return { folder: resolve(inputDir) };
    // The snapshot trained from: a branch such as main can move on after training.
    return { repo: source.repo, revision: source.commit ?? source.revision ?? null };
  }
  // Without the resolution (a library caller): the model argument read as the resolver reads it.
  if (existsSync(model)) return { folder: resolve(inputDir) };
  const { repo, revision } = parseRepoArgument(model);
  return { repo, revision };
}

/**
 * The adapter's model card (README.md), as PEFT's save_pretrained writes one: front matter with
 * `library_name: peft` and, for a Hub base, `base_model` (what the Hub reads to show the folder
 * as an adapter of that model), then the base, rank, alpha and how to load it.
 */
export function renderAdapterCard(a: PeftAdapter, stage: number): string {
  const hub = 'repo' in a.base ? a.base : undefined;
  const base = hub ? hub.repo : (a.base as { folder: string }).folder;
  const lines = ['---'];
  if (hub) lines.push(`base_model: ${JSON.stringify(hub.repo)}`);
  lines.push('library_name: peft', 'tags:', '- lora', '- apex', '---', '');
  lines.push(`# LoRA adapter of apex stage ${stage}`, '');
  lines.push('The factors this apex LoRA stage trained, in PEFT\'s layout. The stage also merged them into the weights (`../trained.safetensors`, which the stage fuses into `../model/` unless run with --no-expand); the adapter keeps them apart, for serving several adapters on one base or merging elsewhere.', '');
  lines.push('| | |', '|---|---|');
  lines.push(`| base model | \`${base}\`${hub && hub.revision !== null ? ` at \`${hub.revision}\`` : ''} |`);
  lines.push(`| rank r | ${a.rank} |`, `| lora_alpha | ${a.alpha} |`, `| scale (alpha / r) | ${a.alpha / a.rank} |`, `| target modules | ${a.targetModules.join(', ')} |`, '');
  lines.push('```python', 'from transformers import AutoModelForCausalLM', 'from peft import PeftModel', '');
  lines.push(`base = AutoModelForCausalLM.from_pretrained(${JSON.stringify(base)}${hub && hub.revision !== null ? `, revision=${JSON.stringify(hub.revision)}` : ''})`);
  lines.push('model = PeftModel.from_pretrained(base, "path/to/this/adapter")', '```', '');
  if (stage > 1) lines.push(`Stage ${stage} trained on the merged weights of stage ${stage - 1}: that fused model is the base, not the run's original model.`, '');
  return `${lines.join('\n')}`;
}
