/**
 * A decoder layer whose activations are recomputed in the backward pass (activation
 * checkpointing) instead of kept on the gradient tape, for training.
 *
 * The layer runs inside tf.customGrad: tfjs runs a custom op's forward with kernelDepth > 0, so
 * none of the layer's ops is recorded on the tape and its intermediates are freed as soon as it
 * returns (the engine tidies the forward). The op saves only the tensors the layer reads (its
 * input x, the weights and the rope tables; clones that share their data, so no copy is made) and
 * its gradient function runs the layer again under a nested tape (engine.gradients starts a fresh
 * tape at gradientDepth 0) and back with the incoming gradient. Only that one layer's
 * intermediates and their gradients are alive at a time; what training keeps for the backward
 * pass drops from every layer's intermediates to every layer's input.
 *
 * The hooks (APEX mixing sites, LoRA, the prepared per-step transforms) are applied outside the
 * checkpointed function, in decoder-layer.ts's order (each projection's weight, then its bias;
 * q, k, v, o, gate, up, down), so their own gradients flow through the ordinary tape; the layer
 * inside then runs on the transformed weights with no hooks. The observer runs in the forward
 * only, never in the recomputation. Recomputed on the same backend with the same kernels, the
 * layer's values, and the gradients of its inputs, are the ones the tape would have given.
 *
 * A custom op returns gradients for its explicit inputs only: these are x and the weights that
 * can carry a gradient, that is, those a hook replaced (on the tape, or a tensor the caller
 * differentiates with respect to, as prepared-transforms.ts hands out) and trainable
 * tf.Variables. A plain constant tensor the hooks leave alone (a frozen weight) is read, not
 * differentiated: no weight gradient is computed for it, as the tape would prune it.
 */
import * as tf from '@tensorflow/tfjs';
import { decoderLayer, type DecoderLayerOptions, type LayerWeights } from './decoder-layer.js';
import type { ProjectionKey } from './layer-hooks.js';
import type { ModelSpec } from './model-spec.js';
import { tapeGradients } from './tape-gradients.js';

/** The order decoder-layer.ts reads the projections in (each weight, then its bias): hooks may rely on it. */
const FORWARD_ORDER: readonly ProjectionKey[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Where each tensor of a layer sits in the flat list the custom op saves. */
interface Slot {
  readonly kind: 'inputNorm' | 'postAttentionNorm' | 'weight' | 'bias';
  readonly key?: ProjectionKey;
}

function isTrainableVariable(t: tf.Tensor): boolean {
  return t instanceof tf.Variable && t.trainable;
}

/**
 * Gradients of f() at xs with the upstream gradient dy, under a tape of their own. The outer
 * backward pass is running (gradientDepth 0 again), so engine.gradients starts a fresh tape; but
 * it also sets the engine's active tape to null when it ends, and the outer engine.gradients
 * disposes the saved tensors of `state.activeTape` at its end: without putting the outer tape
 * back it would fail there (null) and leak every tensor saved for the backward pass.
 */
function nestedGradients(f: () => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): (tf.Tensor | undefined)[] {
  const engine = tf.engine();
  const outerTape = engine.state.activeTape;
  try {
    // tapeGradients: a throw in the recomputation frees the nested tape's saved tensors (the
    // outer tape's are freed by the training step's own tapeGradients).
    const { value, grads } = tapeGradients(f, xs, dy, true);
    value.dispose();
    return grads;
  } finally {
    engine.state.activeTape = outerTape;
  }
}

/**
 * `decoderLayer(x, w, spec, options)` with the hooks applied here and the layer checkpointed:
 * the same value; in the backward pass the layer is recomputed. Training only (no key/value cache).
 */
export function recomputedDecoderLayer(x: tf.Tensor3D, w: LayerWeights, spec: ModelSpec, options: DecoderLayerOptions): tf.Tensor3D {
  if (options.past) throw new Error('recomputedDecoderLayer: a key/value cache is not supported (training only)');
  const { hooks, observe, layer, rope } = options;

  // The hooks, outside the checkpoint: in decoder-layer.ts's order, on the ordinary tape.
  const slots: Slot[] = [{ kind: 'inputNorm' }, { kind: 'postAttentionNorm' }];
  const tensors: tf.Tensor[] = [w.inputNorm, w.postAttentionNorm];
  const differentiable: boolean[] = [isTrainableVariable(w.inputNorm), isTrainableVariable(w.postAttentionNorm)];
  for (const key of FORWARD_ORDER) {
    const W = w.proj[key];
    const Wt = hooks?.transformWeight?.(key, W) ?? W;
    slots.push({ kind: 'weight', key });
    tensors.push(Wt);
    differentiable.push(Wt !== W || isTrainableVariable(Wt));
    const b = w.bias[key];
    if (b) {
      const bt = hooks?.transformBias ? hooks.transformBias(key, b) : b;
      slots.push({ kind: 'bias', key });
      tensors.push(bt);
      differentiable.push(bt !== b || isTrainableVariable(bt));
    }
  }
  const weightsFrom = (ts: readonly tf.Tensor[]): LayerWeights => {
    const proj: Partial<Record<ProjectionKey, tf.Tensor2D>> = {};
    const bias: Partial<Record<ProjectionKey, tf.Tensor1D>> = {};
    let inputNorm = w.inputNorm;
    let postAttentionNorm = w.postAttentionNorm;
    slots.forEach((s, i) => {
      const t = ts[i]!;
      if (s.kind === 'inputNorm') inputNorm = t as tf.Tensor1D;
      else if (s.kind === 'postAttentionNorm') postAttentionNorm = t as tf.Tensor1D;
      else if (s.kind === 'weight') proj[s.key!] = t as tf.Tensor2D;
      else bias[s.key!] = t as tf.Tensor1D;
    });
    return { inputNorm, postAttentionNorm, proj: proj as Record<ProjectionKey, tf.Tensor2D>, bias };
  };
  const inputIndices = tensors.flatMap((_t, i) => (differentiable[i] ? [i] : []));

  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const value = tf.tidy(() => decoderLayer(x, weightsFrom(tensors), spec, { layer, rope, ...(observe ? { observe } : {}) }));
    // Saved (clones sharing the data): x, every tensor the layer reads and the rope tables; the
    // tape's tidy may free the originals (x and the hooks' outputs are intermediates) before the
    // backward pass. Saved after the layer ran: the engine keeps the clones but puts them on the
    // tape only once this function returns, so a throw in the layer (the observer's checks, a
    // kernel error) would leave clones saved before it owned by nothing.
    save([x, ...tensors, rope.cos, rope.signedSin]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const savedX = saved[0] as tf.Tensor3D;
        const savedWeights = saved.slice(1, 1 + tensors.length);
        const savedRope = { cos: saved[1 + tensors.length] as tf.Tensor2D, signedSin: saved[2 + tensors.length] as tf.Tensor2D };
        const xs = [savedX, ...inputIndices.map((i) => savedWeights[i]!)];
        // The recomputation: no hooks (applied above), no observer (it saw the forward).
        const grads = nestedGradients(() => decoderLayer(savedX, weightsFrom(savedWeights), spec, { layer, rope: savedRope }), xs, dy);
        return grads.map((g, i) => g ?? tf.zerosLike(xs[i]!));
      },
    };
  }) as (...inputs: tf.Tensor[]) => tf.Tensor3D;
  return op(x, ...inputIndices.map((i) => tensors[i]!));
}
