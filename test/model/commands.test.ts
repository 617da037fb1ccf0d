/**
 * `apex eval` and `apex generate` as a user runs them: the built CLI in a child process, checked
 * against the transformers references and for its exit codes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { i32Tensor, writeSafetensors } from '../../src/io/safetensors-writer.js';
import { readInputIds } from '../../src/train/data-input-ids.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import { paddedIds } from '../../src/model/prompts.js';
import { parseModelConfig } from '../../src/model/config.js';
import { generationWorkBytes, residentGenerationBytes } from '../../src/model/generation-source.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { loadReference } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let tmp: string;

function ensureBuilt(): void {
  const built = ['eval', 'generate'].map((c) => join(ROOT, 'dist', 'commands', `${c}.js`));
  const sources = ['src/commands/eval.ts', 'src/commands/generate.ts', ...readdirSync(join(ROOT, 'src/model')).map((f) => `src/model/${f}`)];
  const newest = Math.max(...sources.map((s) => statSync(join(ROOT, s)).mtimeMs));
  if (built.every((b) => existsSync(b) && statSync(b).mtimeMs >= newest)) return;
  try {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'pipe' });
  } catch {
    // Type errors elsewhere in the tree still emit JavaScript; the check below is what matters.
  }
  for (const b of built) expect(existsSync(b), `${b} must exist: run npm run build`).toBe(true);
}

function apex(args: string[]): { status: number | null; json: { ok: boolean; data?: any; error?: { code: string; exit: number; message: string } }; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'run.js'), ...args, '--json'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, json: JSON.parse(r.stdout), stderr: r.stderr };
}

beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'apex-model-cli-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('apex eval', () => {
  it('--split heldout reproduces the held-out perplexity apex finetune measured on its own split', async () => {
    const ref = await loadReference('stories260K');
    // 24 rows of 16 tokens cut from the reference stories: finetune holds out a seeded 5% (at least one row).
    const rows: number[] = [];
    for (const s of ref.sequences) for (let at = 0; at + 16 <= s.length && rows.length < 24 * 16; at += 16) rows.push(...s.slice(at, at + 16));
    const file = join(tmp, 'split-ids.safetensors');
    await writeSafetensors(file, [i32Tensor('input_ids', [rows.length / 16, 16], Int32Array.from(rows))]);
    const run = join(tmp, 'split-run');
    const trained = apex(['finetune', 'fixtures/stories260K', '--input-ids', file, '--seq-len', '16', '--method', 'vanilla', '--steps', '2', '--batch-size', '4', '--lr', '1e-3', '--backend', 'wasm', '-o', run]);
    expect(trained.status).toBe(0);
    const metrics = readFileSync(join(run, 'stages/1/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { eval_loss?: number });
    const heldOut = metrics.at(-1)!.eval_loss!;
    const evaluated = apex(['eval', join(run, 'stages/1/model'), '--input-ids', file, '--seq-len', '16', '--split', 'heldout', '--backend', 'wasm']);
    expect(evaluated.json.data.data).toMatchObject({ split: 'heldout', splitSeed: 0 });
    expect(Math.abs(evaluated.json.data.meanNll - heldOut)).toBeLessThan(1e-5);
    // The whole file is another set, with another loss.
    const all = apex(['eval', join(run, 'stages/1/model'), '--input-ids', file, '--seq-len', '16', '--backend', 'wasm']);
    expect(Math.abs(all.json.data.meanNll - heldOut)).toBeGreaterThan(1e-3);
  });

  it('a token id outside the vocabulary is refused naming the data file (exit 3)', async () => {
    const file = join(tmp, 'foreign-ids.safetensors');
    await writeSafetensors(file, [i32Tensor('input_ids', [1, 4], Int32Array.from([1, 5, 600, 7]))]);
    const r = apex(['eval', 'fixtures/stories260K', '--input-ids', file, '--backend', 'wasm']);
    expect(r.json.error).toMatchObject({ code: 'TOKEN_RANGE', exit: 3 });
    expect(r.json.error!.message).toBe(`${file}: sequence 0, position 2: token id 600 is outside the model's vocabulary [0, 512) (data made for another model?)`);
  });

  it('reproduces the reference mean NLL from --input-ids and records the backend', async () => {
    const ref = await loadReference('llama-mha-f32');
    const ids = new Int32Array(ref.B * ref.T);
    ref.sequences.forEach((s, b) => ids.set(s, b * ref.T));
    const file = join(tmp, 'ref-ids.safetensors');
    await writeSafetensors(file, [i32Tensor('input_ids', [ref.B, ref.T], ids)]);
    const r = apex(['eval', 'fixtures/llama-mha-f32', '--input-ids', file, '--backend', 'wasm', '--batch-size', '4']);
    expect(r.status).toBe(0);
    const d = r.json.data;
    expect(Math.abs(d.meanNll - ref.meanNll)).toBeLessThanOrEqual(1e-4);
    expect(d).toMatchObject({ backend: 'wasm', tokens: ref.B * (ref.T - 1), sequences: ref.B, seqLen: ref.T, chunkSequences: 4 });
    expect(d.perplexity).toBeCloseTo(Math.exp(ref.meanNll), 3);
    expect(d.data.kind).toBe('input-ids');
  });

  it('evaluates text data through the tokenizer', () => {
    const text = join(tmp, 'doc.txt');
    writeFileSync(text, 'We the People of the United States, in Order to form a more perfect Union, establish Justice. '.repeat(20));
    const r = apex(['eval', 'fixtures/llama-mha-f32', '--data', text, '--seq-len', '64', '--backend', 'wasm']);
    expect(r.status).toBe(0);
    expect(r.json.data.seqLen).toBe(64);
    expect(r.json.data.meanNll).toBeGreaterThan(0);
    expect(r.json.data.data.kind).toBe('text');
  });

  it('exits 3 on an unsupported architecture, 2 on a bad backend or no tokenizer, 5 on an impossible budget', () => {
    const dir = join(tmp, 'gpt2');
    mkdirSync(dir);
    copyFileSync('fixtures/stories260K/model.safetensors', join(dir, 'model.safetensors'));
    const config = JSON.parse(readFileSync('fixtures/stories260K/config.json', 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['GPT2LMHeadModel'] }));
    const unsupported = apex(['eval', dir]);
    expect(unsupported.status).toBe(3);
    expect(unsupported.json.error).toMatchObject({ code: 'UNSUPPORTED_MODEL', exit: 3 });
    expect(unsupported.json.error!.message).toMatch(/GPT2LMHeadModel/);
    expect(apex(['eval', 'fixtures/stories260K', '--backend', 'nope']).status).toBe(2);
    const noTokenizer = apex(['eval', 'fixtures/stories260K', '--backend', 'wasm']);
    expect(noTokenizer.status).toBe(2);
    expect(noTokenizer.json.error!.message).toMatch(/--input-ids/);
    const tiny = apex(['eval', 'fixtures/llama-mha-f32', '--max-memory', '1MB', '--backend', 'wasm']);
    expect(tiny.status).toBe(5);
  });
});

describe('apex generate', () => {
  it('a prompt id outside the vocabulary is refused naming the --input-ids file, by prompt index (exit 3)', async () => {
    // It named no file, and counted "sequence" within a batch of one prompt length, not among the prompts.
    const file = join(tmp, 'foreign-prompts.safetensors');
    await writeSafetensors(file, [i32Tensor('input_ids', [3, 4], Int32Array.from([1, 5, 6, 7, 1, 5, 6, 7, 1, 5, 600, 7]))]);
    const r = apex(['generate', 'fixtures/stories260K', '--input-ids', file, '--max-new-tokens', '1', '--backend', 'wasm']);
    expect(r.json.error).toMatchObject({ code: 'TOKEN_RANGE', exit: 3 });
    expect(r.json.error!.message).toBe(`${file}: sequence 2, position 2: token id 600 is outside the model's vocabulary [0, 512) (data made for another model?)`);
  });

  it('continues BOS greedily as the reference does and writes the ids as --input-ids data', async () => {
    const ref = await loadReference('stories260K');
    const out = join(tmp, 'greedy.safetensors');
    const r = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', String(ref.greedyIds.length - 1), '--ids-out', out, '--backend', 'wasm']);
    expect(r.status).toBe(0);
    expect(r.json.data.sequences[0].ids).toEqual(Array.from(ref.greedyIds));
    expect(r.json.data).toMatchObject({ backend: 'wasm', resident: true });
    const written = await readInputIds(out);
    expect(written.tensorName).toBe('input_ids');
    expect(Array.from(written.rows[0]!)).toEqual(Array.from(ref.greedyIds));
    expect(written.lengths).toEqual([ref.greedyIds.length]); // the attention_mask: no padding in one row
    // Again onto the same file: refused before generating unless --force; the model's own weights never.
    const again = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '1', '--ids-out', out, '--backend', 'wasm']);
    expect([again.status, again.json.error.code]).toEqual([2, 'OUTPUT_EXISTS']);
    const forced = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '1', '--ids-out', out, '--force', '--backend', 'wasm']);
    expect(forced.status).toBe(0);
    expect((await readInputIds(out)).rows[0]!.length).toBe(2);
    const weights = join('fixtures/stories260K', 'model.safetensors');
    const onModel = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '1', '--ids-out', weights, '--force', '--backend', 'wasm']);
    expect([onModel.status, onModel.json.error.code]).toEqual([2, 'OUTPUT_HOLDS_INPUT']);
  });

  it('stops on the end-of-sequence ids of generation_config.json too, as Hugging Face generate does', async () => {
    const ref = await loadReference('stories260K');
    const model = join(tmp, 'stories-gencfg');
    mkdirSync(model);
    for (const f of readdirSync('fixtures/stories260K')) copyFileSync(join('fixtures/stories260K', f), join(model, f));
    // The greedy continuation's third token becomes an end-of-turn id.
    const stopAt = ref.greedyIds[3]!;
    const config = JSON.parse(readFileSync(join(model, 'generation_config.json'), 'utf8'));
    writeFileSync(join(model, 'generation_config.json'), JSON.stringify({ ...config, eos_token_id: [2, stopAt] }));
    const r = apex(['generate', model, '--max-new-tokens', '12', '--backend', 'wasm']);
    expect(r.status).toBe(0);
    expect(r.json.data.sequences[0].ids).toEqual(Array.from(ref.greedyIds.subarray(0, 4)));
    writeFileSync(join(model, 'generation_config.json'), '{"eos_token_id": "two"}');
    const bad = apex(['generate', model, '--max-new-tokens', '2', '--backend', 'wasm']);
    expect(bad.json.error).toMatchObject({ code: 'BAD_CONFIG', exit: 3, message: expect.stringContaining('generation_config.json: eos_token_id must be a token id') });
  });

  it('samples as generation_config.json asks (do_sample, temperature, top_p; top_k defaulting to 50) unless the flags say otherwise', async () => {
    const ref = await loadReference('stories260K');
    const model = join(tmp, 'stories-sampling');
    mkdirSync(model);
    for (const f of readdirSync('fixtures/stories260K')) copyFileSync(join('fixtures/stories260K', f), join(model, f));
    const config = JSON.parse(readFileSync(join(model, 'generation_config.json'), 'utf8'));
    writeFileSync(join(model, 'generation_config.json'), JSON.stringify({ ...config, do_sample: true, temperature: 0.7, top_p: 0.9 }));
    const sampled = apex(['generate', model, '--max-new-tokens', '16', '--seed', '5', '--backend', 'wasm']);
    expect(sampled.json.data.sampling).toEqual({ temperature: 0.7, topK: 50, topP: 0.9, seed: 5, from: 'generation_config' });
    expect(sampled.json.warnings.join('\n')).toContain("sampling as the model's generation_config.json asks (temperature 0.7, top-k 50, top-p 0.9)");
    // The same as asking the plain fixture (greedy by its generation_config) for these settings by flags.
    const byFlags = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '16', '--seed', '5', '--temperature', '0.7', '--top-k', '50', '--top-p', '0.9', '--backend', 'wasm']);
    expect(byFlags.json.data.sampling.from).toBe('flags');
    expect(sampled.json.data.sequences[0].ids).toEqual(byFlags.json.data.sequences[0].ids);
    expect(sampled.json.data.sequences[0].ids).not.toEqual(Array.from(ref.greedyIds.subarray(0, 17)));
    const greedy = apex(['generate', model, '--max-new-tokens', '16', '--temperature', '0', '--backend', 'wasm']);
    expect(greedy.json.data.sequences[0].ids).toEqual(Array.from(ref.greedyIds.subarray(0, 17)));
    const plain = apex(['generate', 'fixtures/stories260K', '--max-new-tokens', '1', '--backend', 'wasm']);
    expect(plain.json.data.sampling).toEqual({ temperature: 0, topK: 0, topP: 1, seed: 0, from: 'default' });
    // Python would sample with any truthy do_sample ("yes"); apex refuses what is not a boolean.
    writeFileSync(join(model, 'generation_config.json'), JSON.stringify({ ...config, do_sample: 'yes' }));
    const notBoolean = apex(['generate', model, '--max-new-tokens', '1', '--backend', 'wasm']);
    expect(notBoolean.json.error).toMatchObject({ code: 'BAD_CONFIG', exit: 3, message: expect.stringContaining('generation_config.json: do_sample must be true or false, got "yes"') });
    writeFileSync(join(model, 'generation_config.json'), JSON.stringify({ ...config, do_sample: true, top_p: 2 }));
    const bad = apex(['generate', model, '--max-new-tokens', '1', '--backend', 'wasm']);
    expect(bad.json.error).toMatchObject({ code: 'BAD_CONFIG', exit: 3, message: expect.stringContaining('generation_config.json: top_p must be a number in its range, got 2') });
    // With --temperature the flags decide, and the file's sampling values are not read.
    const flagged = apex(['generate', model, '--max-new-tokens', '1', '--temperature', '0.7', '--backend', 'wasm']);
    expect([flagged.status, flagged.json.data.sampling]).toEqual([0, { temperature: 0.7, topK: 0, topP: 1, seed: 0, from: 'flags' }]);
  });

  it('right-padded prompts of different lengths are each continued from their own end; --ids-out masks only the padding', async () => {
    const ref = await loadReference('stories260K');
    const greedy = Array.from(ref.greedyIds);
    const file = join(tmp, 'ragged.safetensors');
    const { ids, attentionMask, shape } = paddedIds([Int32Array.from(greedy.slice(0, 3)), Int32Array.from(greedy.slice(0, 6)), Int32Array.from(greedy.slice(0, 3))], 0);
    await writeSafetensors(file, [i32Tensor('input_ids', shape, ids), i32Tensor('attention_mask', shape, attentionMask)]);
    const out = join(tmp, 'ragged-out.safetensors');
    const r = apex(['generate', 'fixtures/stories260K', '--input-ids', file, '--max-new-tokens', '4', '--ids-out', out, '--force', '--backend', 'wasm']);
    expect(r.status).toBe(0);
    // The greedy continuation of a prefix of the greedy sequence is the sequence itself.
    expect(r.json.data.sequences.map((q: { ids: number[] }) => q.ids)).toEqual([greedy.slice(0, 7), greedy.slice(0, 10), greedy.slice(0, 7)]);
    const f = await SafetensorsFile.open(out);
    const mask = await f.readBytes('attention_mask');
    await f.close();
    const m = new Int32Array(mask.buffer, mask.byteOffset, mask.byteLength / 4);
    expect([0, 1, 2].map((b) => m.subarray(b * 10, (b + 1) * 10).reduce((a, v) => a + v, 0))).toEqual([7, 10, 7]);
  });

  it('sizes memory for the largest batch of one prompt length, not for every prompt at the longest length', async () => {
    // 40 one-token prompts and one of 300 tokens run as two batches, one after the other: the
    // model stays resident under a budget between what the larger batch needs and what all 41
    // prompts at 300 tokens would need (which the command once asked for, and then streamed).
    const spec = parseModelConfig(JSON.parse(readFileSync('fixtures/stories260K/config.json', 'utf8')), 'config.json');
    const rows = [Int32Array.from({ length: 300 }, (_, i) => 1 + (i % 400)), ...Array.from({ length: 40 }, () => Int32Array.of(1))];
    const newTokens = 8;
    const perGroup = Math.max(residentGenerationBytes(spec, 1, 300, 300 + newTokens), residentGenerationBytes(spec, 40, 1, 1 + newTokens));
    const allAtLongest = residentGenerationBytes(spec, 41, 300, 300 + newTokens);
    expect(allAtLongest).toBeGreaterThan(1.5 * perGroup);
    const file = join(tmp, 'lengths.safetensors');
    const { ids, attentionMask, shape } = paddedIds(rows, 0);
    await writeSafetensors(file, [i32Tensor('input_ids', shape, ids), i32Tensor('attention_mask', shape, attentionMask)]);
    const budget = String(Math.round((perGroup + allAtLongest) / 2));
    const r = apex(['generate', 'fixtures/stories260K', '--input-ids', file, '--max-new-tokens', String(newTokens), '--max-memory', budget, '--backend', 'wasm']);
    expect([r.status, r.json.data?.resident]).toEqual([0, true]);
    // Below the weights themselves the model is streamed.
    const weightsOnly = residentGenerationBytes(spec, 1, 1, 1) - generationWorkBytes(spec, 1, 1, 1);
    const under = apex(['generate', 'fixtures/stories260K', '--input-ids', file, '--max-new-tokens', String(newTokens), '--max-memory', String(weightsOnly), '--backend', 'wasm']);
    expect([under.status, under.json.data?.resident]).toEqual([0, false]);
  });

  it('splits prompts whose key/value cache does not fit beside the weights into smaller batches, with the same sampled tokens', async () => {
    const spec = parseModelConfig(JSON.parse(readFileSync('fixtures/stories260K/config.json', 'utf8')), 'config.json');
    const rows = Array.from({ length: 24 }, (_, r) => Int32Array.from({ length: 20 }, (_, i) => 1 + ((r * 37 + i * 11) % 500)));
    const file = join(tmp, 'many.safetensors');
    await writeSafetensors(file, [i32Tensor('input_ids', [24, 20], Int32Array.from(rows.flatMap((r) => Array.from(r))))]);
    // A budget that holds the weights and exactly 10 rows' cache and activations (computed from the sizes, not by the planner).
    const need = (batch: number) => residentGenerationBytes(spec, batch, 20, 26);
    expect(need(11)).toBeGreaterThan(need(10));
    // Sampled: the stricter case (each row's tokens come from its own seed whatever its batch; greedy needs only the same logits).
    const args = ['generate', 'fixtures/stories260K', '--input-ids', file, '--max-new-tokens', '6', '--backend', 'wasm', '--temperature', '1', '--seed', '3'];
    const whole = apex([...args, '--max-memory', '1GiB']);
    const split = apex([...args, '--max-memory', String(need(10))]);
    expect([whole.status, whole.json.data.batches, whole.json.data.resident]).toEqual([0, 1, true]);
    expect([split.status, split.json.data.batches, split.json.data.resident]).toEqual([0, 3, true]);
    expect(split.json.warnings.join('\n')).toContain('running at most 10 prompts at a time (3 batches)');
    expect(split.json.data.sequences.map((q: { ids: number[] }) => q.ids)).toEqual(whole.json.data.sequences.map((q: { ids: number[] }) => q.ids));
  });

  it('tokenizes a text prompt and decodes the continuation', () => {
    const r = apex(['generate', 'fixtures/llama-mha-f32', '--prompt', 'The Congress', '--max-new-tokens', '8', '--backend', 'wasm']);
    expect(r.status).toBe(0);
    const s = r.json.data.sequences[0];
    expect(s.ids[0]).toBe(1);
    expect(s.generatedIds).toHaveLength(8);
    expect(s.text.startsWith('<s>The Congress')).toBe(true);
    expect(s.text.endsWith(s.generatedText)).toBe(true);
  });

  it('continues several --prompt texts as one batch, each (greedy) as it would be alone', () => {
    const both = apex(['generate', 'fixtures/llama-mha-f32', '--prompt', 'The Congress', '--prompt', 'It was', '--max-new-tokens', '5', '--backend', 'wasm']);
    const second = apex(['generate', 'fixtures/llama-mha-f32', '--prompt', 'It was', '--max-new-tokens', '5', '--backend', 'wasm']);
    expect(both.status).toBe(0);
    expect(both.json.data.sequences).toHaveLength(2);
    expect(both.json.data.sequences[0].text.startsWith('<s>The Congress')).toBe(true);
    expect(both.json.data.sequences[1].ids).toEqual(second.json.data.sequences[0].ids);
  });

  it('--chat renders each prompt as a user turn with the generation prompt: the Tulu format without a template, the model’s template with one', async () => {
    const tokenizer = (await loadTokenizer('fixtures/llama-mha-f32'))!;
    // No chat template in this fixture: open-instruct's Tulu format, written out by hand here.
    const tulu = apex(['generate', 'fixtures/llama-mha-f32', '--chat', '--system', 'Be brief.', '--prompt', 'Name a river.', '--max-new-tokens', '3', '--backend', 'wasm']);
    expect(tulu.status).toBe(0);
    const expected = tokenizer.encode('<|system|>\nBe brief.\n<|user|>\nName a river.\n<|assistant|>\n');
    expect(expected[0]).toBe(1);
    expect(tulu.json.data.sequences[0].ids.slice(0, expected.length)).toEqual(expected);
    expect(tulu.json.data.sequences[0].ids).toHaveLength(expected.length + 3);
    expect(tulu.json.warnings.join('\n')).toContain('the model has no chat template');
    // A template that writes BOS itself: BOS is not added a second time.
    const model = join(tmp, 'llama-chat');
    mkdirSync(model, { recursive: true });
    for (const f of readdirSync('fixtures/llama-mha-f32')) copyFileSync(join('fixtures/llama-mha-f32', f), join(model, f));
    const config = JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8'));
    const template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }));
    const own = apex(['generate', model, '--chat', '--prompt', 'Name a river.', '--prompt', 'Hi', '--max-new-tokens', '2', '--backend', 'wasm']);
    expect(own.status).toBe(0);
    const first = tokenizer.encode('<s>[user] Name a river.\n[assistant] ', { addSpecialTokens: false });
    expect([first[0], first[1]]).not.toContain(undefined);
    expect(first.filter((id) => id === 1)).toHaveLength(1);
    expect(own.json.data.sequences[0].ids.slice(0, first.length)).toEqual(first);
    expect(own.json.data.sequences[1].ids.slice(0, 2)).toEqual(tokenizer.encode('<s>[user] Hi', { addSpecialTokens: false }).slice(0, 2));
    expect(own.json.warnings.join('\n')).not.toContain('no chat template');
    // --system needs --chat, --chat needs --prompt.
    expect(apex(['generate', model, '--system', 'x', '--prompt', 'Hi', '--backend', 'wasm']).status).toBe(2);
    expect(apex(['generate', model, '--chat', '--backend', 'wasm']).status).toBe(2);
  });
});
