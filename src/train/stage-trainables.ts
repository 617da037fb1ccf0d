/**
 * The in-memory model of a stage and what trains in it (APEX-METHOD §4): the checkpoint loaded
 * in float32 with exactly the directly-trained tensors as tf variables, fresh APEX operators
 * (seeded; M = 0, a = b = 1, so training starts at the checkpoint's function) or LoRA
 * adapters, the forward hooks that apply them, and the optimizer's parameter list with masks.
 *
 * Weight decay (when asked for) follows the Hugging Face Trainer's grouping: matrices decay
 * (weights, embeddings, Monarch factors, LoRA factors); vectors do not (norm weights, biases,
 * and the operator scales a and b, which start at 1) **(ours: the reference uses no decay)**.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Checkpoint } from '../io/checkpoint.js';
import type { LayerHooks } from '../model/layer-hooks.js';
import { disposeModelWeights, loadModelWeights, type ModelWeights } from '../model/model-weights.js';
import type { ModelSpec } from '../model/model-spec.js';
import { initLayerOperators } from '../ops/operator-init.js';
import { operatorTensorName } from '../ops/operator-file.js';
import { disposeOperatorVariables, operatorHooks, operatorVariables, type TrainableLayerOperators } from '../ops/operator-hooks.js';
import type { LayerSelection } from '../ops/selection.js';
import { Rng } from '../util/rng.js';
import type { OptimizedParameter, TrainedLines } from './adamw.js';
import { LoraAdapters, loraParamCount } from './lora.js';
import {
  directTrainables,
  elementCount,
  modelParamCount,
  operatorParamCount,
  summarizeTrainable,
  trainableEntryCount,
  trainableMask,
  type DirectTrainable,
  type TrainableSummary,
  type TrainingSetting,
} from './trainable-params.js';

export interface TrainablePlan {
  readonly setting: TrainingSetting;
  /** One per layer; required for the APEX settings. */
  readonly selections?: readonly LayerSelection[];
  readonly trainEmbeddings?: boolean;
  readonly operatorSeed?: number;
  readonly lora?: { readonly rank: number; readonly alpha?: number; readonly seed: number };
}

export interface StageTrainables {
  readonly model: ModelWeights;
  readonly params: OptimizedParameter[];
  readonly hooks: ((layer: number) => LayerHooks | undefined) | undefined;
  /** Per layer, the operators (APEX settings). */
  readonly operators: TrainableLayerOperators[] | undefined;
  readonly lora: LoraAdapters | undefined;
  readonly direct: DirectTrainable[];
  readonly summary: TrainableSummary;
  dispose(): void;
}

const usesOperators = (setting: TrainingSetting) => setting === 'operators' || setting === 'structured' || setting === 'full';

/** Tensors that train directly under the plan, without loading anything (for memory estimates). */
export function planDirectTrainables(spec: ModelSpec, plan: TrainablePlan): DirectTrainable[] {
  return directTrainables(spec, plan.setting, plan.selections, { trainEmbeddings: plan.trainEmbeddings ?? false });
}

/** The trainable-parameter summary of a plan (for `--match-params` and the memory estimate). */
export function summarizePlan(spec: ModelSpec, plan: TrainablePlan): TrainableSummary {
  const operators = usesOperators(plan.setting) && plan.selections ? operatorParamCount(plan.selections, spec.headDim) : 0;
  const adapters = plan.lora ? loraParamCount(spec, plan.lora.rank) : 0;
  return summarizeTrainable(plan.setting, planDirectTrainables(spec, plan), modelParamCount(spec), { operators, adapters });
}

/**
 * The rows or columns of a matrix that trains in part, which the optimizer keeps moments for
 * (adamw.ts `lines`). A bias that trains on its tuned rows (q/k/v, gate/up) is a vector: it
 * keeps its mask and whole-vector moments.
 */
export function optimizerLines(t: DirectTrainable): TrainedLines | undefined {
  if (t.shape.length !== 2) return undefined;
  return t.rows !== undefined ? { axis: 0, indices: t.rows } : t.columns !== undefined ? { axis: 1, indices: t.columns } : undefined;
}

/** Entries the optimizer keeps state for (moments, masked and clipped gradients): trained lines, or the whole tensor. */
export function optimizerEntryCount(t: DirectTrainable): number {
  return optimizerLines(t) !== undefined || (t.rows === undefined && t.columns === undefined) ? trainableEntryCount(t) : elementCount(t.shape);
}

let instances = 0;

export async function buildStageTrainables(checkpoint: Checkpoint, spec: ModelSpec, plan: TrainablePlan): Promise<StageTrainables> {
  const direct = planDirectTrainables(spec, plan);
  const directByName = new Map(direct.map((t) => [t.name, t]));
  // tfjs variable names are global to the process: every stage instance gets its own prefix.
  instances += 1;
  const { model } = await loadModelWeights(checkpoint, { trainable: (name) => directByName.has(name), variablePrefix: `apex-stage-${instances}/` });
  const masks: tf.Tensor[] = [];
  let operators: TrainableLayerOperators[] | undefined;
  let lora: LoraAdapters | undefined;
  try {
    const params: OptimizedParameter[] = [];
    for (const t of direct) {
      const variable = model.tensors.get(t.name) as tf.Variable;
      // With its lines named, the optimizer keeps moments for those rows/columns only (adamw.ts)
      // and needs no mask; a bias trained on some rows keeps a mask.
      const lines = optimizerLines(t);
      const mask = lines ? undefined : trainableMask(t);
      if (mask) masks.push(mask);
      params.push({ name: t.name, variable, ...(mask ? { mask } : {}), ...(lines ? { lines } : {}), decay: t.shape.length > 1 });
    }
    let hooks: ((layer: number) => LayerHooks | undefined) | undefined;
    if (usesOperators(plan.setting)) {
      if (!plan.selections) throw new Error(`the ${plan.setting} setting needs a selection per layer`);
      const rng = new Rng(plan.operatorSeed ?? 0);
      operators = plan.selections.map((s) => operatorVariables(initLayerOperators(s.layer, { heads: s.heads, channels: s.channels }, spec.headDim, rng)));
      for (const op of operators) params.push(...operatorParameters(op));
      const layerHooks = operators.map((op) => operatorHooks(op, spec));
      hooks = (layer) => layerHooks[layer];
    }
    if (plan.lora) {
      const adapters = LoraAdapters.create(spec, { rank: plan.lora.rank, ...(plan.lora.alpha !== undefined ? { alpha: plan.lora.alpha } : {}), seed: plan.lora.seed });
      lora = adapters;
      for (const p of adapters.parameters()) params.push({ name: p.name, variable: p.variable, decay: true });
      hooks = (layer) => adapters.hooksForLayer(layer);
    }
    const summary = summarizePlan(spec, plan);
    const ops = operators;
    const adapters = lora;
    return {
      model,
      params,
      hooks,
      operators: ops,
      lora: adapters,
      direct,
      summary,
      dispose: () => {
        for (const m of masks) m.dispose();
        for (const op of ops ?? []) disposeOperatorVariables(op);
        adapters?.dispose();
        disposeModelWeights(model);
      },
    };
  } catch (e) {
    for (const m of masks) m.dispose();
    for (const op of operators ?? []) disposeOperatorVariables(op);
    lora?.dispose();
    disposeModelWeights(model);
    throw e;
  }
}

/** A layer's operator variables under their operators.safetensors names. */
function operatorParameters(op: TrainableLayerOperators): OptimizedParameter[] {
  const out: OptimizedParameter[] = [];
  const name = (kind: 'self_attn' | 'mlp', field: string) => operatorTensorName(op.layer, kind, field);
  if (op.attn) {
    out.push({ name: name('self_attn', 'B1'), variable: op.attn.B1 }, { name: name('self_attn', 'B2'), variable: op.attn.B2 });
    out.push({ name: name('self_attn', 'a'), variable: op.attn.a, decay: false }, { name: name('self_attn', 'b_v'), variable: op.attn.bV, decay: false });
  }
  if (op.mlp) {
    out.push({ name: name('mlp', 'B1'), variable: op.mlp.B1 }, { name: name('mlp', 'B2'), variable: op.mlp.B2 });
    out.push({ name: name('mlp', 'a'), variable: op.mlp.a, decay: false });
    out.push({ name: name('mlp', 'b_gate'), variable: op.mlp.bGate, decay: false }, { name: name('mlp', 'b_up'), variable: op.mlp.bUp, decay: false });
  }
  return out;
}
