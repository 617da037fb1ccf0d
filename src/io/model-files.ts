/**
 * The non-weight files of a Hugging Face model folder that a rewritten checkpoint carries
 * over byte for byte: configs, tokenizer files and chat templates. Other weight formats
 * (`*.bin`, `*.pth`, `*.gguf`, `original/`) are never copied: apex writes safetensors only.
 */
import { copyFile, readdir } from 'node:fs/promises';
import { refuseDevice } from './bounded-read.js';
import { join } from 'node:path';
import { fsyncFile } from './atomic-output.js';
import { ioError } from './io-error.js';

export const MODEL_FILES: readonly string[] = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
];

/** Which of MODEL_FILES exist in `dir`, in MODEL_FILES order. */
export async function listModelFiles(dir: string): Promise<string[]> {
  const present = new Set(await readdir(dir));
  return MODEL_FILES.filter((f) => present.has(f));
}

/**
 * Copies the model files present in `fromDir` to `toDir` (fsync'd), skipping the names in
 * `skip` (files the caller writes itself, e.g. a changed config.json). Returns the names copied.
 */
export async function copyModelFiles(fromDir: string, toDir: string, skip: ReadonlySet<string> = new Set()): Promise<string[]> {
  const copied: string[] = [];
  for (const name of await listModelFiles(fromDir)) {
    if (skip.has(name)) continue;
    const target = join(toDir, name);
    const source = join(fromDir, name);
    await refuseDevice(source, "apex copies the model's files into its output");
    await copyFile(source, target).catch((e: unknown) => { throw ioError(target, 'copy', e); });
    await fsyncFile(target);
    copied.push(name);
  }
  return copied;
}
