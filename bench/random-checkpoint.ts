/**
 * Writes LLaMA checkpoints with random weights (uniform, std 0.02; norms 1) through apex's own
 * checkpoint writer, one tensor at a time, for benchmarks that need a model of a given shape.
 */
import { writeCheckpoint, floatTensor } from '../src/io/checkpoint-writer.js';
import type { DType } from '../src/io/dtype.js';
import { expectedTensors } from '../src/model/architecture.js';
import { parseModelConfig } from '../src/model/config.js';

export interface RandomModelShape {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  tied?: boolean;
}

export function llamaConfig(s: RandomModelShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu',
    hidden_size: s.hidden, num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads,
    head_dim: s.hidden / s.heads, intermediate_size: s.intermediate, vocab_size: s.vocab, tie_word_embeddings: s.tied ?? false,
    rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 2048, bos_token_id: 1, eos_token_id: 2,
  };
}

/** Uniform values with standard deviation `std` from a 32-bit xorshift (fast; quality is irrelevant here). */
function randomValues(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  const scale = (std * Math.sqrt(12)) / 4294967296;
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = (x - 2147483648) * scale;
  }
  return out;
}

export async function writeRandomCheckpoint(dir: string, shape: RandomModelShape, dtype: DType): Promise<void> {
  const config = llamaConfig(shape);
  const spec = parseModelConfig(config, dir);
  let seed = 1;
  const tensors = [...expectedTensors(spec)].map(([name, dims]) => {
    const n = dims.reduce((p, d) => p * d, 1);
    const s = seed++;
    return floatTensor(name, dtype, dims, async () => (name.endsWith('norm.weight') ? new Float32Array(n).fill(1) : randomValues(n, 0.02, s)));
  });
  await writeCheckpoint({ outDir: dir, tensors, layout: { kind: 'plan', maxShardBytes: 2e9 }, files: { 'config.json': `${JSON.stringify(config, null, 2)}\n` }, hash: false, force: true });
}
