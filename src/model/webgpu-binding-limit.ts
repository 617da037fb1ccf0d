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

/** The weights of one decoder layer (what the streaming forward of analyze and eval holds on the device), one of each shape kind. */
export function largestLayerWeights(spec: ModelSpec): SizedTensor[] {
  const D = spec.hiddenSize;
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  return [
    sized('each mlp.gate_proj / up_proj weight', [I, D]),
    sized('each mlp.down_proj weight', [D, I]),
    sized('each self_attn.q_proj weight', [q, D]),
    sized('each self_attn.o_proj weight', [D, q]),
    sized('each self_attn.k_proj / v_proj weight', [kv, D]),
  ];
}

/** The model's largest weights as float32: the embeddings, lm_head and one layer's (gradients and moments share their shapes). */
export function largestWeights(spec: ModelSpec): SizedTensor[] {
  return [
    sized('the embeddings (model.embed_tokens.weight)', [spec.vocabSize, spec.hiddenSize]),
    ...(spec.tieWordEmbeddings ? [] : [sized('lm_head.weight', [spec.vocabSize, spec.hiddenSize])]),
    ...largestLayerWeights(spec),
  ];
}

/** One micro-batch's largest activations in training (the logits excepted, see above). */
export function largestActivations(spec: ModelSpec, batch: number, seqLen: number): SizedTensor[] {
  return [
    sized('the attention scores', [batch, spec.numHeads, seqLen, seqLen]),
    sized('the MLP activations', [batch, seqLen, spec.intermediateSize]),
    sized('the query projections', [batch, seqLen, spec.numHeads * spec.headDim]),
  ];
}

/**
 * Throws ResourceLimitError (exit 5, MEMORY_WEBGPU_BINDING) when a weight or an activation of a
 * training micro-batch (or of a held-out evaluation batch: pass what to lower) would exceed
 * `limitBytes`, the device's largest storage binding.
 */
export function checkWebgpuBinding(spec: ModelSpec, batch: number, seqLen: number, limitBytes: number, what: string, lower = 'lower --batch-size or --seq-len (use --grad-accum to keep the batch)'): void {
  refuseOver(largestWeights(spec), largestActivations(spec, batch, seqLen), limitBytes, what, 'trained', lower);
}

/**
 * The same for a streaming forward pass (analyze, eval), which holds one layer's weights and
 * makes the lm_head's logits in row blocks: its weights, and the activations of one sequence
 * (the forward plans its chunks within the limit, memory-estimate.ts planForward).
 */
export function checkWebgpuForwardBinding(spec: ModelSpec, seqLen: number, limitBytes: number): void {
  refuseOver(largestLayerWeights(spec), largestActivations(spec, 1, seqLen), limitBytes, `a forward pass of one ${seqLen}-token sequence`, 'run', 'use shorter sequences (--seq-len)');
}

function refuseOver(weights: SizedTensor[], activations: SizedTensor[], limitBytes: number, what: string, verb: string, lower: string): void {
  const limit = `this GPU's largest storage binding (${formatBytes(limitBytes)}, maxStorageBufferBindingSize)`;
  const weight = weights.find((t) => t.bytes > limitBytes);
  if (weight) {
    throw new ResourceLimitError(
      `${what} on webgpu: ${weight.what}, [${weight.shape.join(', ')}] as float32 (${formatBytes(weight.bytes)}), exceeds ${limit}, ` +
        `so the model cannot be ${verb} on this GPU through WebGPU; use another backend (--backend tensorflow, wasm or cpu)`,
      'MEMORY_WEBGPU_BINDING',
    );
  }
  const activation = activations.find((t) => t.bytes > limitBytes);
  if (activation) {
    throw new ResourceLimitError(`${what} on webgpu: ${activation.what}, [${activation.shape.join(', ')}] float32 (${formatBytes(activation.bytes)}), exceed ${limit}; ${lower}`, 'MEMORY_WEBGPU_BINDING');
  }
}

/** Whether a forward chunk of `batch` sequences and an lm_head block of `rows` rows stay within `limitBytes` in every tensor. */
export function forwardChunkFits(spec: ModelSpec, batch: number, seqLen: number, rows: number, limitBytes: number): boolean {
  if (!Number.isFinite(limitBytes)) return true;
  const logits = F32_BYTES * rows * batch * seqLen;
  const block = F32_BYTES * rows * spec.hiddenSize;
  return logits <= limitBytes && block <= limitBytes && largestActivations(spec, batch, seqLen).every((t) => t.bytes <= limitBytes);
}
