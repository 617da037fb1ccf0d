/**
 * `generation_config.json`, the file Hugging Face `generate` reads its defaults from. apex takes
 * the end-of-sequence ids from it: instruction-tuned models list their end-of-turn tokens there
 * (e.g. Llama-3's `<|eot_id|>`), often beside a different `eos_token_id` in config.json, and a
 * generation that ignored them would run past the end of the answer; and, where `apex generate`
 * is not told otherwise, whether and how to sample (`do_sample`, `temperature`, `top_k`, `top_p`).
 */
import { MAX_SMALL_FILE_BYTES, readBoundedText } from '../io/bounded-read.js';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { tokenIds } from './config.js';

export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** The eos_token_id(s) of the model folder's generation_config.json; none when the file is absent. */
export async function generationEosIds(modelDir: string): Promise<number[]> {
  const config = await readGenerationConfig(modelDir);
  return config === undefined ? [] : tokenIds(config.value, 'eos_token_id', config.path);
}

export interface GenerationSampling {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
}

/**
 * The sampling the model's generation_config.json asks Hugging Face generate for: with
 * `do_sample: true`, its temperature, top_k and top_p, each defaulting as transformers'
 * GenerationConfig does (1.0, 50, 1.0); undefined (greedy) otherwise.
 */
export async function generationSampling(modelDir: string): Promise<GenerationSampling | undefined> {
  const config = await readGenerationConfig(modelDir);
  if (config === undefined) return undefined;
  const doSample = config.value.do_sample;
  // Python reads any truthy value ("yes", 1) as true, where apex would generate greedily: refused.
  if (doSample !== undefined && doSample !== null && typeof doSample !== 'boolean') {
    throw new InputError(`${config.path}: do_sample must be true or false, got ${JSON.stringify(doSample)}`, 'BAD_CONFIG');
  }
  if (doSample !== true) return undefined;
  const number = (key: string, fallback: number, ok: (v: number) => boolean): number => {
    const v = config.value[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !ok(v)) throw new InputError(`${config.path}: ${key} must be a number in its range, got ${JSON.stringify(v)}`, 'BAD_CONFIG');
    return v;
  };
  return {
    temperature: number('temperature', 1, (v) => v > 0 && Number.isFinite(v)),
    topK: number('top_k', 50, (v) => Number.isSafeInteger(v) && v >= 0),
    topP: number('top_p', 1, (v) => v > 0 && v <= 1),
  };
}

async function readGenerationConfig(modelDir: string): Promise<{ path: string; value: Record<string, unknown> } | undefined> {
  const path = join(modelDir, GENERATION_CONFIG_FILE);
  let text: string;
  try {
    text = await readBoundedText(path, MAX_SMALL_FILE_BYTES, 'BAD_CONFIG');
  } catch (e) {
    if (e instanceof InputError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InputError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code})`, 'NOT_FOUND');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`, 'BAD_CONFIG');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InputError(`${path}: must be a JSON object`, 'BAD_CONFIG');
  return { path, value: value as Record<string, unknown> };
}
