/**
 * `generation_config.json`, the file Hugging Face `generate` reads its defaults from. apex takes
 * the end-of-sequence ids from it: instruction-tuned models list their end-of-turn tokens there
 * (e.g. Llama-3's `<|eot_id|>`), often beside a different `eos_token_id` in config.json, and a
 * generation that ignored them would run past the end of the answer.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { tokenIds } from './config.js';

export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** The eos_token_id(s) of the model folder's generation_config.json; none when the file is absent. */
export async function generationEosIds(modelDir: string): Promise<number[]> {
  const path = join(modelDir, GENERATION_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new InputError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code})`, 'NOT_FOUND');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`, 'BAD_CONFIG');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InputError(`${path}: must be a JSON object`, 'BAD_CONFIG');
  return tokenIds(value as Record<string, unknown>, 'eos_token_id', path);
}
