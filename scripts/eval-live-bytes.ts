/**
 * Live wasm-heap bytes of one held-out evaluation (src/train/held-out-eval.ts) on a model of
 * random weights, by wrapping the wasm backend's _malloc/_free: the peak over the weights, per
 * token, against the forward-only term of src/train/stage-memory.ts (docs/reliability.md,
 * "Held-out evaluation batch"). Shapes: stories (stories260K), small (llama-mha-f32), 10m (the
 * 10M benchmark model), vocab (1 layer, 32K vocabulary: the logits phase).
 *
 *     npx tsx scripts/eval-live-bytes.ts --shape 10m --batch 4 --seq 128
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import { parseModelConfig } from '../src/model/config.js';
import { expectedTensors } from '../src/model/architecture.js';
import { modelWeightsFromArrays } from '../src/model/model-weights.js';
import { evaluateHeldOut } from '../src/train/held-out-eval.js';
import type { SequenceSet } from '../src/train/data.js';

const { values } = parseArgs({ options: { shape: { type: 'string', default: 'stories' }, batch: { type: 'string', default: '8' }, seq: { type: 'string', default: '128' } } });
const shapes: Record<string, Record<string, unknown>> = {
  stories: { hidden_size: 64, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 8, intermediate_size: 172, vocab_size: 512, tie_word_embeddings: true },
  small: { hidden_size: 128, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4, head_dim: 32, intermediate_size: 352, vocab_size: 2048, tie_word_embeddings: false },
  vocab: { hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 4, head_dim: 16, intermediate_size: 128, vocab_size: 32000, tie_word_embeddings: false },
  '10m': { hidden_size: 256, num_hidden_layers: 8, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 32, intermediate_size: 688, vocab_size: 8192, tie_word_embeddings: false },
};
const spec = parseModelConfig({ architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 4096, ...shapes[values.shape!] }, values.shape!);
await selectBackend('wasm');
const wasm = (tf.backend() as unknown as { wasm: { _malloc(n: number): number; _free(p: number): void; HEAPU8: Uint8Array } }).wasm;
// The first call replaces Module._malloc/_free with the raw exports: make it before wrapping.
wasm._free(wasm._malloc(8));
const sizes = new Map<number, number>();
let live = 0;
let peak = 0;
const malloc = wasm._malloc.bind(wasm);
const free = wasm._free.bind(wasm);
wasm._malloc = (n: number) => { const p = malloc(n); sizes.set(p >>> 0, n); live += n; if (live > peak) peak = live; return p; };
wasm._free = (p: number) => { live -= sizes.get(p >>> 0) ?? 0; sizes.delete(p >>> 0); free(p); };
let seed = 1;
const rand = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 - 0.5; };
const arrays = new Map<string, Float32Array>();
for (const [name, dims] of expectedTensors(spec)) arrays.set(name, Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => 0.05 * rand()));
const model = modelWeightsFromArrays(spec, arrays);
const B = Number(values.batch);
const T = Number(values.seq);
const set: SequenceSet = { seqLen: T, sequences: Array.from({ length: B }, () => Int32Array.from({ length: T }, () => Math.floor((rand() + 0.5) * spec.vocabSize))), source: { kind: 'input-ids', paths: [], sha256: [], seqLen: T, seed: 0 } as unknown as SequenceSet['source'] };
const weights = live;
const heap0 = wasm.HEAPU8.buffer.byteLength;
peak = live;
await evaluateHeldOut(model, set, { batchSize: B });
const D = spec.hiddenSize, q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim, I = spec.intermediateSize, L = spec.numLayers, H = spec.numHeads, V = spec.vocabSize;
const tokens = B * T;
const perTok = (peak - weights) / 4 / tokens;
console.log(JSON.stringify({ shape: values.shape, B, T, weightsMB: weights / 1e6, evalLiveMB: (peak - weights) / 1e6, floatsPerToken: perTok, perLayerToken: (perTok) / L,
  layersFormulaPerToken: L * (18 * D + 11 * q + 11 * kv + 8 * I + 4 * H * T) + 2 * D, logitsFormulaPerToken: 5 * V + D, heapGrowthMB: (wasm.HEAPU8.buffer.byteLength - heap0) / 1e6, heapMB: wasm.HEAPU8.buffer.byteLength / 1e6 }));
