/**
 * Finds the Hugging Face access token the way the Python client does: HF_TOKEN, else the token
 * file at HF_TOKEN_PATH (default $HF_HOME/token, written by `huggingface-cli login`). Whitespace
 * around the token is dropped and an empty value counts as none. Every token found is registered
 * as a secret, so `redact` masks it in anything apex prints or writes.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { registerSecret } from '../util/secrets.js';
import { expandHome, hfHomeDir } from './hf-cache.js';

export type TokenSource = 'option' | 'HF_TOKEN' | 'file' | 'none';

export interface FoundToken {
  token: string | undefined;
  source: TokenSource;
  /** The token file consulted (whether or not it exists). */
  file: string;
}

export function tokenFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_TOKEN_PATH ? resolve(expandHome(env.HF_TOKEN_PATH)) : join(hfHomeDir(env), 'token');
}

/** The token to send: an explicit one wins, then HF_TOKEN, then the token file. */
export function findToken(explicit?: string, env: NodeJS.ProcessEnv = process.env): FoundToken {
  const file = tokenFilePath(env);
  const found = ((): Omit<FoundToken, 'file'> => {
    const given = explicit?.trim();
    if (given) return { token: given, source: 'option' };
    const fromEnv = env.HF_TOKEN?.trim();
    if (fromEnv) return { token: fromEnv, source: 'HF_TOKEN' };
    let fromFile: string | undefined;
    try {
      fromFile = readFileSync(file, 'utf8').trim();
    } catch {
      fromFile = undefined;
    }
    return fromFile ? { token: fromFile, source: 'file' } : { token: undefined, source: 'none' };
  })();
  registerSecret(found.token);
  return { ...found, file };
}
