/**
 * The rules of an `apex run` config that span several keys: contradictions between keys, and
 * the defaults that depend on other keys (setting only with apex, steps or tokens, LoRA alpha).
 * They run on the merged config, after every key has been checked on its own.
 */
import { CONFIG_SCHEMA, type ResolvedConfig } from './config-schema.js';
import type { ConfigProblem } from './schema-check.js';

export interface RuleContext {
  /** The key was written in the config file or an override, not taken from a default. */
  explicit(path: string): boolean;
  /** The key failed its own check (the config holds a fallback), so rules about it stay silent. */
  failed(path: string): boolean;
  /** Where the key was written, for messages. */
  locate(path: string): string | undefined;
}

/**
 * Applies the cross-key rules to `config` in place (dependent defaults, sections that do not
 * apply set to null) and returns every contradiction found.
 */
export function applyRunRules(config: ResolvedConfig, ctx: RuleContext): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const problem = (path: string, message: string): void => {
    problems.push({ path, message, where: ctx.locate(path) });
  };
  const given = (path: string, value: unknown): boolean => ctx.explicit(path) && value !== null && !ctx.failed(path);
  /** The first key of a section that was written with a non-null value. */
  const firstGiven = (section: object | null, prefix: string): string | undefined =>
    Object.entries(section ?? {})
      .map(([key, value]) => [`${prefix}.${key}`, value] as const)
      .find(([path, value]) => given(path, value))?.[0];
  const methodKnown = !ctx.failed('method');
  const { method, stages } = config;

  // setting: method apex only; null there means the default.
  if (method !== 'apex') {
    if (methodKnown && given('setting', config.setting)) problem('setting', `applies only to method apex (method is ${method})`);
    config.setting = null;
  } else if (config.setting === null) {
    config.setting = CONFIG_SCHEMA.properties.setting.default;
  }

  // structured: method apex with setting structured only.
  const structuredKey = firstGiven(config.structured, 'structured');
  // (A tuned ratio below what P and N take is not a contradiction: the total is
  // max(|P| + |N|, floor(n · ratio)), so it means no extra units E, the spec's "small totals".)
  if (!(method === 'apex' && config.setting === 'structured')) {
    if (structuredKey !== undefined && methodKnown && !ctx.failed('setting')) {
      problem(structuredKey, `applies only to method apex with setting structured (method is ${method}${config.setting ? `, setting ${config.setting}` : ''}); drop the section, or override structured= to clear it`);
    }
    config.structured = null;
  }

  // lora: method lora only; rank is picked by match_params or given, alpha defaults to 2 · rank.
  const loraKey = firstGiven(config.lora, 'lora');
  if (method === 'lora') {
    const l = config.lora!;
    if (l.match_params !== null) {
      if (given('lora.rank', l.rank)) problem('lora.rank', 'is exclusive with lora.match_params, which picks the rank; set one');
      l.rank = null;
    } else if (l.rank === null && !ctx.failed('lora.rank')) {
      problem('lora.rank', 'must be set when lora.match_params is null');
    }
    if (l.alpha === null || !ctx.explicit('lora.alpha')) l.alpha = l.rank === null ? null : 2 * l.rank;
  } else {
    if (loraKey !== undefined && methodKnown) problem(loraKey, `applies only to method lora (method is ${method}); drop the section, or override lora= to clear it`);
    config.lora = null;
  }

  // The budget of a stage: steps or tokens, exactly one.
  // tokens has no default, so a non-null tokens was written; a default steps gives way to it.
  if (stages.tokens !== null && stages.steps !== null) {
    if (ctx.explicit('stages.steps')) problem('stages.tokens', 'is exclusive with stages.steps: set one and the other to null');
    else stages.steps = null;
  } else if (stages.tokens === null && stages.steps === null && !ctx.failed('stages.steps') && !ctx.failed('stages.tokens')) {
    problem('stages.steps', 'one of stages.steps and stages.tokens must be set');
  }

  // Each data set is text (or chat) files or token ids, not both, as --data and --input-ids of
  // finetune, eval and analyze; the training set is the one that must be given. Files that were
  // not written (the embedded default's corpus) give way to ids, as a default steps to tokens.
  const { data } = config;
  for (const set of ['train', 'eval', 'calibration'] as const) {
    const idsKey = `data.${set}_input_ids`;
    if (data[`${set}_input_ids`] === null || data[set] === null) continue;
    if (!ctx.explicit(`data.${set}`)) data[set] = null;
    else if (given(`data.${set}`, data[set]) && given(idsKey, data[`${set}_input_ids`])) {
      problem(idsKey, `is exclusive with data.${set}: give the ${set === 'train' ? 'training' : set === 'eval' ? 'held-out' : 'calibration'} data as files or as token ids, and set the other to null`);
    }
  }
  if (data.train === null && data.train_input_ids === null && !ctx.failed('data.train') && !ctx.failed('data.train_input_ids')) {
    problem('data.train', 'is required: a path or list of paths (each may be builtin:NAME), or token ids in data.train_input_ids');
  }

  // A vanilla baseline next to a vanilla run would train the same thing twice.
  if (method === 'vanilla') {
    if (methodKnown && given('baseline.vanilla', config.baseline.vanilla) && config.baseline.vanilla) {
      problem('baseline.vanilla', 'is the run itself with method vanilla; set it to false');
    }
    config.baseline.vanilla = false;
  }
  return problems;
}
