/**
 * WebGPU binds every tensor a shader reads or writes as one storage buffer, and a device caps
 * that binding (`maxStorageBufferBindingSize`: 128 MiB on Mesa's lavapipe, a few GB on a data-
 * centre GPU). A bigger tensor does not fail where it is made: Dawn rejects the command that
 * binds it, drops the command buffer, and the step's results are lost (webgpu-guards.ts then
 * reports a GPU_VALIDATION error, exit 6, after the work). A training stage on webgpu checks
 * up front instead (ResourceLimitError, exit 5, nothing written) that no tensor it will make is
 * over the limit: the model's weights (and their gradients, optimizer moments of the same shape)
 * and one micro-batch's largest activations. The logits are not among them: over the limit they
 * are made a block of positions at a time (train/model-loss.ts).
 */
import { ResourceLimitError } from '../errors.js';
import { formatBytes } from '../io/byte-size.js';
import type { ModelSpec } from './model-spec.js';

const F32_BYTES = 4;

export interface SizedTensor {
  readonly what: string;
  readonly shape: readonly number[];
  readonly bytes: number;
}

const sized = (what: string, shape: number[]): SizedTensor => ({ what, shape, bytes: F32_BYTES * shape.reduce((a, b) => a * b, 1) });

/** The model's largest weights as float32 (one of each shape kind; gradients and moments share them). */
export function largestWeights(spec: ModelSpec): SizedTensor[] {
  const D = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  return [
    sized('the embeddings (model.embed_tokens.weight)', [spec.vocabSize, D]),
    ...(spec.tieWordEmbeddings ? [] : [sized('lm_head.weight', [spec.vocabSize, D])]),
    sized('each mlp.gate_proj / up_proj weight', [I, D]),
    sized('each mlp.down_proj weight', [D, I]),
    sized('each self_attn.q_proj weight', [q, D]),
    sized('each self_attn.o_proj weight', [D, q]),
    sized('each self_attn.k_proj / v_proj weight', [kv, D]),
  ];
}

/** One micro-batch's largest activations in training (the logits excepted, see above). */
export function largestActivations(spec: ModelSpec, batch: number, seqLen: number): SizedTensor[] {
  return [
    sized('the attention scores of one micro-batch', [batch, spec.numHeads, seqLen, seqLen]),
    sized('the MLP activations of one micro-batch', [batch, seqLen, spec.intermediateSize]),
    sized('the query projections of one micro-batch', [batch, seqLen, spec.numHeads * spec.headDim]),
  ];
}

/**
 * Throws ResourceLimitError (exit 5, MEMORY_WEBGPU_BINDING) when a weight or an activation of a
 * training micro-batch would exceed `limitBytes`, the device's largest storage binding.
 */
export function checkWebgpuBinding(spec: ModelSpec, batch: number, seqLen: number, limitBytes: number, what: string): void {
  const limit = `this GPU's largest storage binding (${formatBytes(limitBytes)}, maxStorageBufferBindingSize)`;
  const weight = largestWeights(spec).find((t) => t.bytes > limitBytes);
  if (weight) {
    throw new ResourceLimitError(
      `${what} on webgpu: ${weight.what}, [${weight.shape.join(', ')}] as float32 (${formatBytes(weight.bytes)}), exceeds ${limit}, ` +
        'so the model cannot be trained on this GPU through WebGPU; use another backend (--backend tensorflow, wasm or cpu)',
      'MEMORY_WEBGPU_BINDING',
    );
  }
  const activation = largestActivations(spec, batch, seqLen).find((t) => t.bytes > limitBytes);
  if (activation) {
    throw new ResourceLimitError(
      `${what} on webgpu: ${activation.what}, [${activation.shape.join(', ')}] float32 (${formatBytes(activation.bytes)}), exceed ${limit}; ` +
        'lower --batch-size or --seq-len (use --grad-accum to keep the batch)',
      'MEMORY_WEBGPU_BINDING',
    );
  }
}
