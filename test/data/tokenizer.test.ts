import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, resolveSpecialWrap } from '../../src/model/tokenizer.js';

const MODEL = 'fixtures/llama-mha-f32';

interface Parity {
  texts: string[];
  ids: number[][];
}

async function modelWithConfig(config: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'apex-tok-'));
  await copyFile(join(MODEL, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

describe('loadTokenizer', () => {
  it('gives the ids of HF tokenizers for every parity text (BOS from the post-processor)', async () => {
    const parity = JSON.parse(await readFile('fixtures/refs/llama-mha-f32/tokenizer_parity.json', 'utf8')) as Parity;
    const tok = (await loadTokenizer(MODEL))!;
    expect(parity.texts.length).toBeGreaterThanOrEqual(8);
    parity.texts.forEach((text, i) => {
      expect(tok.encode(text), `text ${i}: ${JSON.stringify(text)}`).toEqual(parity.ids[i]);
    });
  });

  it('decodes back to the text (byte-level BPE is lossless)', async () => {
    const parity = JSON.parse(await readFile('fixtures/refs/llama-mha-f32/tokenizer_parity.json', 'utf8')) as Parity;
    const tok = (await loadTokenizer(MODEL))!;
    for (const text of parity.texts) {
      expect(tok.decode(tok.encode(text, { addSpecialTokens: false }))).toBe(text);
      expect(tok.decode(tok.encode(text), { skipSpecialTokens: true })).toBe(text);
    }
    expect(tok.decode([1, 2])).toBe('<s></s>');
  });

  it('reads the special tokens from the config', async () => {
    const tok = (await loadTokenizer(MODEL))!;
    expect([tok.bosId, tok.eosId, tok.padId]).toEqual([1, 2, 2]);
    expect([tok.bosToken, tok.eosToken]).toEqual(['<s>', '</s>']);
    expect(tok.prefixIds).toEqual([1]);
    expect(tok.suffixIds).toEqual([]);
    expect(tok.vocabSize).toBe(2048);
    expect(tok.chatTemplate).toBeUndefined();
  });

  it('never doubles BOS when the text starts with it', async () => {
    const tok = (await loadTokenizer(MODEL))!;
    const plain = tok.encode('In the beginning');
    expect(plain[0]).toBe(1);
    expect(plain.filter((id) => id === 1)).toHaveLength(1);
    expect(tok.encode('<s>In the beginning')).toEqual(plain);
  });

  it('applies add_bos_token = false and add_eos_token = true from tokenizer_config.json', async () => {
    const noBos = (await loadTokenizer(await modelWithConfig({ bos_token: '<s>', eos_token: '</s>', add_bos_token: false })))!;
    const body = noBos.encode('In the beginning', { addSpecialTokens: false });
    expect(noBos.encode('In the beginning')).toEqual(body);
    const withEos = (await loadTokenizer(await modelWithConfig({ bos_token: '<s>', eos_token: '</s>', add_eos_token: true })))!;
    expect(withEos.encode('In the beginning')).toEqual([1, ...body, 2]);
    expect(withEos.encode('In the beginning</s>')).toEqual([1, ...body, 2]);
  });

  it('resolveSpecialWrap adds or removes BOS/EOS only as the config says', () => {
    const wrap = { prefix: [1], suffix: [] };
    expect(resolveSpecialWrap(wrap, {}, 1, 2)).toEqual({ prefix: [1], suffix: [] });
    expect(resolveSpecialWrap(wrap, { addBos: true }, 1, 2)).toEqual({ prefix: [1], suffix: [] });
    expect(resolveSpecialWrap({ prefix: [], suffix: [] }, { addBos: true, addEos: true }, 1, 2)).toEqual({ prefix: [1], suffix: [2] });
    expect(resolveSpecialWrap({ prefix: [1], suffix: [2] }, { addBos: false, addEos: false }, 1, 2)).toEqual({ prefix: [], suffix: [] });
  });

  it('reads a chat template from chat_template.jinja or tokenizer_config.json', async () => {
    const inConfig = await modelWithConfig({ bos_token: '<s>', eos_token: '</s>', chat_template: '{{ messages[0].content }}' });
    expect((await loadTokenizer(inConfig))!.chatTemplate).toBe('{{ messages[0].content }}');
    await writeFile(join(inConfig, 'chat_template.jinja'), '{{ eos_token }}');
    expect((await loadTokenizer(inConfig))!.chatTemplate).toBe('{{ eos_token }}');
  });

  it('returns undefined for a model folder without tokenizer.json', async () => {
    expect(await loadTokenizer('fixtures/stories260K')).toBeUndefined();
  });
});
