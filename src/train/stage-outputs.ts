/**
 * The files a finished stage leaves in `stages/<n>/` (APEX-METHOD §7), each written
 * atomically (temporary file + rename):
 *
 *   operators.safetensors  M, a, b and P/N/E per layer (APEX settings; ops/operator-file.ts)
 *   trained.safetensors    F32 copies of every directly-trained tensor (whole tensors, also
 *                          when a mask trained some rows); for LoRA the merged projections
 *                          W + (α/r)·B·A; absent for `operators`
 *   scores.safetensors     the rank counts recorded over this stage's micro-batches (APEX)
 *   loss.svg               training loss (and held-out loss) against steps
 *   heldout.json           which documents of each data file the held-out split took, when the
 *                          held-out data is a split of the training data (data-split.ts)
 *
 * Every value is read and checked first: NaN/Inf in any tensor is a VerificationError naming
 * it, raised before the first file is written.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { VerificationError } from '../errors.js';
import { ioError } from '../io/io-error.js';
import { f32Tensor, writeSafetensors, type TensorToWrite } from '../io/safetensors-writer.js';
import type { ModelSpec } from '../model/model-spec.js';
import { findLayerTensor } from '../model/architecture.js';
import { operatorTensorName, writeOperatorFile, type OperatorFileMeta } from '../ops/operator-file.js';
import { firstNonFinite } from '../model/finite-check.js';
import { hasNonFinite, readFloat32 } from '../model/tensor-read.js';
import { readOperatorVariables } from '../ops/operator-hooks.js';
import type { LayerOperators } from '../ops/operator-init.js';
import { countingKMetadata, scoreRecordsFromRecorder, writeScoreFile } from '../ops/score-file.js';
import { OPERATORS_FILE, TRAINED_FILE } from '../pipeline/expand-paths.js';
import { renderLineChartSvg } from '../report/svg-line-chart.js';
import { PROJECTION_KEYS } from './lora.js';
import { ADAPTER_CARD_FILE, ADAPTER_CONFIG_FILE, ADAPTER_DIR, ADAPTER_WEIGHTS_FILE, peftAdapterConfig, peftTensorName, renderAdapterCard, type PeftAdapter } from './peft-adapter.js';
import { formatHeldoutJson, type HeldoutDocuments } from './data-split.js';
import type { MetricsLine } from './metrics-log.js';
import type { TrainingScoreRecorder } from './score-recorder.js';
import { SCORES_FILE } from './stage-selection.js';
import type { StageTrainables } from './stage-trainables.js';

export const LOSS_PLOT_FILE = 'loss.svg';
export const HELDOUT_FILE = 'heldout.json';

export interface StageTensors {
  /** Layers that carry operators (APEX settings). */
  readonly operators: LayerOperators[] | undefined;
  /**
   * trained.safetensors content by checkpoint tensor name (absent for `operators`): the values,
   * or (tensors trained directly) a function that reads them from the variable when the writer
   * reaches the tensor, so that the file is written holding one tensor at a time.
   */
  readonly trained: Map<string, { shape: readonly number[]; values: Float32Array | (() => Promise<Float32Array>) }> | undefined;
  /** LoRA: the trained factors by PEFT tensor name, with rank and alpha (written as adapter/ in PEFT's layout). */
  readonly lora?: { readonly rank: number; readonly alpha: number; readonly tensors: Map<string, { shape: readonly number[]; values: Float32Array }> };
}

function checkFinite(name: string, values: Float32Array): void {
  const i = firstNonFinite(values);
  if (i >= 0) {
    throw new VerificationError(`tensor '${name}' holds ${values[i]} at flat index ${i} after training; the stage's files were not written`, 'NON_FINITE_TENSOR');
  }
}

/** checkFinite of a tensor without downloading it unless it fails (one boolean read). */
async function checkFiniteTensor(name: string, t: tf.Tensor): Promise<void> {
  if (await hasNonFinite(t)) checkFinite(name, await readFloat32(t));
}

/**
 * Every tensor a stage writes, each checked to be finite: operators and LoRA's tensors read out of
 * their variables now, directly-trained tensors when trained.safetensors' writer reaches them.
 */
export async function collectStageTensors(spec: ModelSpec, t: StageTrainables): Promise<StageTensors> {
  let operators: LayerOperators[] | undefined;
  if (t.operators) {
    operators = (await Promise.all(t.operators.map(readOperatorVariables))).filter((l) => l.attn || l.mlp);
    for (const l of operators) {
      const name = (kind: 'self_attn' | 'mlp', field: string) => operatorTensorName(l.layer, kind, field);
      if (l.attn) for (const [field, v] of [['B1', l.attn.B1], ['B2', l.attn.B2], ['a', l.attn.a], ['b_v', l.attn.bV]] as const) checkFinite(name('self_attn', field), v);
      if (l.mlp) for (const [field, v] of [['B1', l.mlp.B1], ['B2', l.mlp.B2], ['a', l.mlp.a], ['b_gate', l.mlp.bGate], ['b_up', l.mlp.bUp]] as const) checkFinite(name('mlp', field), v);
    }
  }
  let trained: StageTensors['trained'];
  let lora: StageTensors['lora'];
  if (t.lora) {
    trained = new Map();
    lora = { rank: t.lora.rank, alpha: t.lora.alpha, tensors: new Map() };
    for (let layer = 0; layer < spec.numLayers; layer++) {
      for (const key of PROJECTION_KEYS) {
        const weight = findLayerTensor(spec, layer, key)!;
        const merged = tf.tidy(() => t.lora!.mergedWeight(layer, key, t.model.tensors.get(weight.name) as tf.Tensor2D));
        const values = await readFloat32(merged);
        merged.dispose();
        trained.set(weight.name, { shape: weight.dims, values });
        const { a, b } = t.lora.factors(layer, key);
        lora.tensors.set(peftTensorName(weight.name, 'A'), { shape: a.shape, values: await readFloat32(a) });
        lora.tensors.set(peftTensorName(weight.name, 'B'), { shape: b.shape, values: await readFloat32(b) });
      }
    }
  } else if (t.direct.length > 0) {
    trained = new Map();
    for (const d of t.direct) {
      const variable = t.model.tensors.get(d.name)!;
      await checkFiniteTensor(d.name, variable);
      trained.set(d.name, { shape: d.shape, values: () => readFloat32(variable) });
    }
  }
  for (const [name, v] of [...(trained ?? []), ...(lora?.tensors ?? [])]) if (v.values instanceof Float32Array) checkFinite(name, v.values);
  return { operators, trained, ...(lora ? { lora } : {}) };
}

/** The training-curve plot of a stage's metrics. */
export function renderLossPlot(stage: number, lines: readonly MetricsLine[]): string {
  const train = lines.filter((l) => l.loss !== undefined).map((l) => ({ x: l.step, y: l.loss! }));
  const held = lines.filter((l) => l.eval_loss !== undefined).map((l) => ({ x: l.step, y: l.eval_loss! }));
  return renderLineChartSvg({
    title: `Stage ${stage}: training loss`,
    subtitle: 'mean next-token NLL (nats) per optimizer step',
    series: [
      { name: 'train loss', points: train, smoothing: train.length > 20 ? 0.6 : 0 },
      ...(held.length > 0 ? [{ name: 'held-out loss', points: held, markers: true }] : []),
    ],
    xLabel: 'step',
    yLabel: 'loss (nats)',
  });
}

export interface StageFileInput {
  readonly dir: string;
  readonly spec: ModelSpec;
  readonly tensors: StageTensors;
  readonly operatorMeta?: OperatorFileMeta;
  readonly recorder?: TrainingScoreRecorder;
  readonly scoreMetadata?: Record<string, string>;
  readonly trainedMetadata?: Record<string, string>;
  readonly metrics: readonly MetricsLine[];
  readonly stage: number;
  /** LoRA: the weights the adapter applies to, for adapter_config.json. */
  readonly adapterBase?: PeftAdapter['base'];
  /** The held-out documents, when the held-out data is a split of the training data. */
  readonly heldout?: HeldoutDocuments;
}

/** Writes the stage's files; returns the names written. */
export async function writeStageFiles(o: StageFileInput): Promise<string[]> {
  const written: string[] = [];
  if (o.tensors.operators && o.operatorMeta) {
    await writeOperatorFile(join(o.dir, OPERATORS_FILE), o.tensors.operators, o.operatorMeta, o.spec.headDim);
    written.push(OPERATORS_FILE);
  }
  if (o.tensors.trained) {
    const tensors: TensorToWrite[] = [...o.tensors.trained].map(([name, t]) => f32Tensor(name, t.shape, t.values));
    await writeSafetensors(join(o.dir, TRAINED_FILE), tensors, { format: 'pt', apex_format: 'trained', ...o.trainedMetadata });
    written.push(TRAINED_FILE);
  }
  if (o.tensors.lora && o.adapterBase) {
    const adapter: PeftAdapter = { rank: o.tensors.lora.rank, alpha: o.tensors.lora.alpha, targetModules: PROJECTION_KEYS, base: o.adapterBase, tensors: o.tensors.lora.tensors };
    await mkdir(join(o.dir, ADAPTER_DIR), { recursive: true }).catch((e: unknown) => { throw ioError(join(o.dir, ADAPTER_DIR), 'create', e); });
    const weights = join(ADAPTER_DIR, ADAPTER_WEIGHTS_FILE);
    await writeSafetensors(join(o.dir, weights), [...adapter.tensors].map(([name, t]) => f32Tensor(name, t.shape, t.values)), { format: 'pt' });
    const config = join(ADAPTER_DIR, ADAPTER_CONFIG_FILE);
    await writeTextAtomic(join(o.dir, config), `${JSON.stringify(peftAdapterConfig(adapter), null, 2)}\n`);
    const card = join(ADAPTER_DIR, ADAPTER_CARD_FILE);
    await writeTextAtomic(join(o.dir, card), renderAdapterCard(adapter, o.stage));
    written.push(weights, config, card);
  }
  if (o.recorder) {
    const counts = o.recorder.counts;
    await writeScoreFile(join(o.dir, SCORES_FILE), scoreRecordsFromRecorder(counts), counts.microBatches(0), { ...o.scoreMetadata, ...countingKMetadata(counts.shape) });
    written.push(SCORES_FILE);
  }
  await writeTextAtomic(join(o.dir, LOSS_PLOT_FILE), renderLossPlot(o.stage, o.metrics));
  written.push(LOSS_PLOT_FILE);
  if (o.heldout) {
    // A file of its own, not part of apex_run.json: a large corpus holds out thousands of documents.
    await writeTextAtomic(join(o.dir, HELDOUT_FILE), formatHeldoutJson(o.heldout));
    written.push(HELDOUT_FILE);
  }
  return written;
}

/**
 * A text file written next to its final name and renamed into place. The temporary's name
 * carries the PID, so a later apex process can tell it from a live writer's (stale-temps.ts).
 */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const h = await open(tmp, 'w').catch((e: unknown) => { throw ioError(path, 'create', e); });
    try {
      await h.writeFile(text).catch((e: unknown) => { throw ioError(path, 'write', e); });
      await h.sync().catch((e: unknown) => { throw ioError(path, 'fsync', e); });
    } finally {
      await h.close();
    }
    await rename(tmp, path).catch((e: unknown) => { throw ioError(path, 'rename into place', e); });
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}
