// Shared by the stage and trainer tests: token-id data from the stories260K reference outputs
// (the fixture has no tokenizer), temporary run folders, and small file readers.
import { expect } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { floatTensor, writeCheckpoint } from '../../src/io/checkpoint-writer.js';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { SafetensorsFile } from '../../src/io/safetensors-reader.js';
import type { ModelSpec } from '../../src/model/model-spec.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { selectModel, type LayerSelection } from '../../src/ops/selection.js';
import type { SequenceSet } from '../../src/train/data.js';
import type { MetricsLine } from '../../src/train/metrics-log.js';
import { readMetrics } from '../../src/train/metrics-log.js';
import type { StageOptions } from '../../src/train/stage.js';
import { Rng } from '../../src/util/rng.js';

export const STORIES = 'fixtures/stories260K';
export const LLAMA = 'fixtures/llama-mha-f32';

export interface StoriesReference {
  /** [B, 128] reference input ids (B = 2). */
  sequences: Int32Array[];
  /** [L, B, H] and [L, B, I] per-sequence sums of squares from PyTorch float64. */
  headSumsq: Float32Array;
  gateSumsq: Float32Array;
}

export async function storiesReference(): Promise<StoriesReference> {
  const f = await SafetensorsFile.open('fixtures/refs/stories260K/reference_outputs.safetensors');
  try {
    const bytes = await f.readBytes('input_ids');
    const ids = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const [B, T] = f.info('input_ids').shape as [number, number];
    return {
      sequences: Array.from({ length: B }, (_, b) => ids.slice(b * T, (b + 1) * T)),
      headSumsq: await f.readFloat32('head_sumsq'),
      gateSumsq: await f.readFloat32('gate_act_sumsq'),
    };
  } finally {
    await f.close();
  }
}

/** A SequenceSet of token ids, as `--input-ids` would give it. */
export function idSet(sequences: Int32Array[]): SequenceSet {
  const seqLen = sequences[0]!.length;
  return {
    seqLen,
    sequences,
    source: { kind: 'input-ids', paths: [], sha256: [], seqLen, seed: 0, split: 'all', heldoutFraction: 0.05, splitSeed: 0, documents: sequences.length, sequences: sequences.length, tokens: sequences.length * seqLen },
  };
}

/** The two reference stories cut into chunks of `length` tokens (the later chunks start mid-story, so the model is poor on them). */
export async function storyChunks(length: number): Promise<SequenceSet> {
  const ref = await storiesReference();
  const out: Int32Array[] = [];
  for (const s of ref.sequences) for (let at = 0; at + length <= s.length; at += length) out.push(s.slice(at, at + length));
  return idSet(out);
}

export function tempRun(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `apex-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function stageMetrics(run: string, stage = 1): Promise<MetricsLine[]> {
  return readMetrics(join(run, 'stages', String(stage), 'metrics.jsonl'));
}

/** All F32 tensors of a safetensors file. */
export async function readAllF32(path: string): Promise<Map<string, { shape: number[]; values: Float32Array }>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, { shape: number[]; values: Float32Array }>();
    for (const t of f.tensors) if (t.dtype === 'F32') out.set(t.name, { shape: [...t.shape], values: await f.readFloat32(t.name) });
    return out;
  } finally {
    await f.close();
  }
}

/**
 * Largest |a − b| over every F32 tensor of `file` in stage 1 of two runs, after checking that
 * both hold the same tensor names (`expect`, so a mismatch fails the calling test).
 */
export async function stageFileMaxAbsDiff(runA: string, runB: string, file: string): Promise<number> {
  const x = await readAllF32(join(runA, 'stages/1', file));
  const y = await readAllF32(join(runB, 'stages/1', file));
  expect([...y.keys()].sort(), file).toEqual([...x.keys()].sort());
  let worst = 0;
  for (const [name, t] of x) for (let i = 0; i < t.values.length; i++) worst = Math.max(worst, Math.abs(t.values[i]! - y.get(name)!.values[i]!));
  return worst;
}

/** A short vanilla stage of llama-mha-f32 on cpu (4 steps of 2, a checkpoint every 2 steps): what the resume tests interrupt and resume. */
export function llamaCheckpointedStage(run: string, train: SequenceSet, extra: Partial<StageOptions> = {}): StageOptions {
  return { model: LLAMA, modelDir: LLAMA, run, stage: 1, train, steps: 4, batchSize: 2, lr: 1e-3, saveEvery: 2, evalEvery: 0, expand: false, backend: 'cpu', method: 'vanilla', ...extra };
}

/**
 * A biased copy of stories260K (GQA, tied), its biases seeded uniform in ±0.1 so they matter to
 * the logits. `qwen2`: model_type qwen2 with q/k/v biases (o_proj and the MLP have none, as in
 * Qwen2); `llama-all`: LLaMA with attention_bias and mlp_bias, all seven projections biased.
 */
export async function writeBiasedStories(out: string, seed: number, kind: 'qwen2' | 'llama-all' = 'qwen2'): Promise<void> {
  const base = await Checkpoint.open(STORIES);
  try {
    const { spec } = describeCheckpoint(base);
    const q = spec.numHeads * spec.headDim;
    const kv = spec.numKvHeads * spec.headDim;
    const tensors = [];
    for (const t of base.tensors()) {
      const values = new Float32Array(await base.readFloat32(t.name));
      tensors.push(floatTensor(t.name, 'F32', [...t.shape], async () => values));
    }
    const biases: [string, number][] = [['self_attn.q_proj', q], ['self_attn.k_proj', kv], ['self_attn.v_proj', kv]];
    if (kind === 'llama-all') biases.push(['self_attn.o_proj', spec.hiddenSize], ['mlp.gate_proj', spec.intermediateSize], ['mlp.up_proj', spec.intermediateSize], ['mlp.down_proj', spec.hiddenSize]);
    const rng = new Rng(seed);
    for (let l = 0; l < spec.numLayers; l++) {
      for (const [p, n] of biases) {
        const values = Float32Array.from({ length: n }, () => 0.2 * rng.next() - 0.1);
        tensors.push(floatTensor(`model.layers.${l}.${p}.bias`, 'F32', [n], async () => values));
      }
    }
    const config = kind === 'qwen2'
      ? { ...base.config, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', use_sliding_window: false }
      : { ...base.config, attention_bias: true, mlp_bias: true };
    await writeCheckpoint({ outDir: out, tensors, layout: { kind: 'plan' }, files: { 'config.json': JSON.stringify(config) }, hash: false });
  } finally {
    await base.close();
  }
}

/** Stage-1 selections from seeded random rank scores (integers in [−10, 10]) for every layer's heads and channels. */
export function randomSelections(spec: ModelSpec, seed: number): LayerSelection[] {
  const rng = new Rng(seed);
  const scores = Array.from({ length: spec.numLayers }, () => ({
    heads: { rank: Array.from({ length: spec.numKvHeads }, () => rng.nextInt(21) - 10) },
    channels: { rank: Array.from({ length: spec.intermediateSize }, () => rng.nextInt(21) - 10) },
  }));
  return selectModel(scores, { stage: 1 });
}
