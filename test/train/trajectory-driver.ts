// The apex side of the PyTorch trajectory comparison (scripts/pytorch/train_reference.py,
// fixtures/refs/train/, test/train/pytorch-trajectory.test.ts): the cases, and the stages of each
// run on the cpu backend with everything the reference needs that comes from apex's seeded
// Rng (the micro-batches' sequence indices, the analysis's calibration sample, the operators'
// initial B1, LoRA's initial A) re-derived from apex's seeds, plus what apex did: the selected
// units, the step metrics, every trainable tensor after the last step, the fused model.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Checkpoint } from '../../src/io/checkpoint.js';
import { describeCheckpoint } from '../../src/model/weight-source.js';
import { operatorTensorName } from '../../src/ops/operator-file.js';
import { initLayerOperators } from '../../src/ops/operator-init.js';
import { BatchStream } from '../../src/train/batch-stream.js';
import { sampleIndices } from '../../src/train/data-split.js';
import type { SequenceSet } from '../../src/train/data.js';
import { LoraAdapters } from '../../src/train/lora.js';
import { stageSeeds } from '../../src/train/stage-records.js';
import { CHECKPOINTS_DIR, runStage, type StageOptions } from '../../src/train/stage.js';
import { latestCheckpoint } from '../../src/train/train-state.js';
import { readWholeTrainState } from './train-state-whole.js';
import { Rng } from '../../src/util/rng.js';
import { LLAMA, readAllF32, stageMetrics, STORIES, storyChunks, tempRun } from './stage-fixtures.js';

export interface TrajectoryCase {
  readonly name: string;
  /** Stage options besides the model, run folder, data and backend. */
  readonly options: Partial<StageOptions> & { steps: number; batchSize: number; gradAccum: number };
  /** Give the sequences loss masks of unequal target counts (token-weighted accumulation). */
  readonly lossMasks?: boolean;
  /** Stages to train, each from the fused model of the one before (default 1). */
  readonly stages?: number;
  /** Default TRAJECTORY_MODEL, TRAJECTORY_SEQ_LEN. */
  readonly model?: string;
  readonly seqLen?: number;
}

/**
 * Every case: stories260K (GQA: 8 query heads, 4 KV heads; tied embeddings), 16 sequences of 16
 * tokens, batch 2 × accumulation 2, clipping at 0.5 (active: every step's gradient norm is
 * above it), weight decay 0.1; but for the two-stage case, 5 steps of a run planned as 14 stages
 * of 5 steps (70 steps: a 2-step warm-up, ⌊0.03·70⌋, then the cosine). APEX selects from an
 * analysis of 4 sequences. `lora` and `apex-full` have loss masks with
 * unequal target counts (token-weighted accumulation).
 */
const COMMON = { steps: 5, totalStages: 14, batchSize: 2, gradAccum: 2, gradClip: 0.5, seed: 7 } as const;

const APEX = { method: 'apex', calibrationSamples: 4 } as const;

export const TRAJECTORY_CASES: readonly TrajectoryCase[] = [
  { name: 'vanilla', options: { ...COMMON, method: 'vanilla', lr: 2e-3, weightDecay: 0.1 } },
  { name: 'lora', options: { ...COMMON, method: 'lora', loraRank: 4, lr: 1e-2, weightDecay: 0.1 }, lossMasks: true },
  { name: 'apex-operators', options: { ...COMMON, ...APEX, setting: 'operators', lr: 3e-2, weightDecay: 0.1 } },
  { name: 'apex-full', options: { ...COMMON, ...APEX, setting: 'full', lr: 2e-3, weightDecay: 0.1 }, lossMasks: true },
  // `structured` in two stages of 4 steps in a 204-step plan: stage 1 within the first warm-up
  // (⌊0.03·204⌋ = 6 steps), stage 2 from the fused model of stage 1 with the units its recorder
  // counted, fresh moments and operators, a warm-up of ⌊0.005·200⌋ = 1 step back to the rate at
  // step 4, then the cosine over the 200 steps left.
  { name: 'apex-structured-2-stages', options: { ...COMMON, ...APEX, steps: 4, totalStages: 51, setting: 'structured', lr: 3e-3, weightDecay: 0.1 }, stages: 2 },
];

/**
 * Longer or other runs compared by hand (scripts/pytorch/export-apex-run.ts, compare.py), not by
 * the test (its time): llama-mha-f32 (MHA, untied lm_head, head_dim 32) and 10-step runs of 32
 * tokens.
 */
export const INVESTIGATION_CASES: readonly TrajectoryCase[] = [
  { name: 'llama-structured-2-stages', model: LLAMA, seqLen: 32, options: { ...COMMON, ...APEX, steps: 6, totalStages: 34, setting: 'structured', lr: 3e-3, weightDecay: 0.1 }, stages: 2 },
  { name: 'llama-lora', model: LLAMA, seqLen: 32, options: { ...COMMON, method: 'lora', steps: 8, loraRank: 8, lr: 1e-2, weightDecay: 0.1 }, lossMasks: true },
  { name: 'stories-operators-10', seqLen: 32, options: { ...COMMON, ...APEX, steps: 10, totalStages: 7, setting: 'operators', lr: 3e-2, weightDecay: 0.1 } },
  { name: 'stories-full-10', seqLen: 32, options: { ...COMMON, ...APEX, steps: 10, totalStages: 7, setting: 'full', lr: 2e-3, weightDecay: 0 }, lossMasks: true },
];

export const TRAJECTORY_MODEL = STORIES;
export const TRAJECTORY_SEQ_LEN = 16;

export interface Tensor {
  readonly shape: number[];
  readonly values: Float32Array;
}

/** What one stage of a case drew, computed and wrote. */
export interface TrajectoryStage {
  readonly stage: number;
  /** Sequence indices of every micro-batch, in the order the trainer reads them. */
  readonly batches: number[][];
  /** Per layer: P, N, E of heads (KV groups) and channels (APEX only). */
  readonly selection: { layer: number; heads: { P: number[]; N: number[]; E: number[] }; channels: { P: number[]; N: number[]; E: number[] } }[] | null;
  /** Operator and adapter tensors at the start (direct trainables start at the stage's input model). */
  readonly initial: Map<string, Tensor>;
  /** Every trainable tensor after the last step (the final checkpoint's). */
  readonly final: Map<string, Tensor>;
  readonly losses: number[];
  readonly lrs: number[];
  readonly gradNorms: number[];
  readonly lrPlan: unknown;
  /** The fused model written after the stage (`stages/<n>/model/`), when a later stage follows. */
  readonly fused?: Map<string, Tensor>;
}

export interface TrajectoryRun {
  readonly case: TrajectoryCase;
  readonly data: SequenceSet;
  /** The sequences stage 1's analysis read, in its order (APEX): apex's seeded sample. */
  readonly calibration: number[] | null;
  readonly stages: TrajectoryStage[];
  readonly run: string;
  cleanup(): void;
}

/** Loss masks with unequal target counts: sequence i scores the tokens from position 1 + 3·(i mod 4) on. */
function withLossMasks(set: SequenceSet): SequenceSet {
  const lossMasks = set.sequences.map((s, i) => {
    const m = new Uint8Array(s.length);
    for (let t = 1 + 3 * (i % 4); t < s.length; t++) m[t] = 1;
    return m;
  });
  return { ...set, lossMasks };
}

export async function trajectoryData(c: TrajectoryCase): Promise<SequenceSet> {
  const data = await storyChunks(c.seqLen ?? TRAJECTORY_SEQ_LEN);
  return c.lossMasks ? withLossMasks(data) : data;
}

/**
 * Runs the case's stages (cpu; each but the last fused into `stages/<n>/model/`, the next
 * stage's input) and gathers what the comparison needs. `saveEvery` 1 keeps a checkpoint per
 * step (for debugging).
 */
export async function runTrajectory(c: TrajectoryCase, options: { saveEvery?: number } = {}): Promise<TrajectoryRun> {
  const { dir: run, cleanup } = tempRun(`torchref-${c.name}`);
  try {
    const data = await trajectoryData(c);
    const model = c.model ?? TRAJECTORY_MODEL;
    const checkpoint = await Checkpoint.open(model);
    const spec = describeCheckpoint(checkpoint).spec;
    await checkpoint.close();
    const stages: TrajectoryStage[] = [];
    const count = c.stages ?? 1;
    for (let stage = 1; stage <= count; stage++) {
      await runStage({
        model,
        modelDir: model,
        run,
        stage,
        train: data,
        backend: 'cpu',
        expand: stage < count,
        ...(options.saveEvery ? { saveEvery: options.saveEvery, keepCheckpoints: 1000 } : {}),
        ...c.options,
      } as StageOptions);
      stages.push(await gatherStage(c, run, stage, data, spec.headDim, spec, stage < count));
    }
    const o = c.options;
    const calibration = o.method === 'apex' ? sampleIndices(data.sequences.length, o.calibrationSamples ?? 64, o.seed ?? 0) : null;
    return { case: c, data, calibration, stages, run, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

async function gatherStage(c: TrajectoryCase, run: string, stage: number, data: SequenceSet, headDim: number, spec: Parameters<typeof LoraAdapters.create>[0], fused: boolean): Promise<TrajectoryStage> {
  const dir = join(run, 'stages', String(stage));
  const record = JSON.parse(await readFile(join(dir, 'apex_run.json'), 'utf8')) as {
    details: { selection: TrajectoryStage['selection']; lr_plan: unknown; lora: { rank: number; alpha: number } | null; seeds: { operators: number; data: number; lora: number } };
  };
  const d = record.details;
  const seeds = stageSeeds(c.options.seed ?? 0, stage);
  if (JSON.stringify(seeds) !== JSON.stringify(d.seeds)) throw new Error(`seeds ${JSON.stringify(d.seeds)} recorded, ${JSON.stringify(seeds)} derived`);
  const stream = new BatchStream(data.sequences.length, new Rng(seeds.data));
  const batches = Array.from({ length: c.options.steps * c.options.gradAccum }, () => stream.next(c.options.batchSize));

  const initial = new Map<string, Tensor>();
  if (d.selection) {
    const rng = new Rng(seeds.operators);
    for (const s of d.selection) {
      const sel = (u: { P: number[]; N: number[]; E: number[] }) => ({ P: Int32Array.from(u.P), N: Int32Array.from(u.N), E: Int32Array.from(u.E) });
      const ops = initLayerOperators(s.layer, { heads: sel(s.heads), channels: sel(s.channels) }, headDim, rng);
      const put = (kind: 'self_attn' | 'mlp', field: string, shape: number[], values: Float32Array) => initial.set(operatorTensorName(s.layer, kind, field), { shape, values });
      if (ops.attn) {
        const { nb, bs } = ops.attn;
        put('self_attn', 'B1', [nb, bs, bs], ops.attn.B1);
        put('self_attn', 'B2', [nb, bs, bs], ops.attn.B2);
        put('self_attn', 'a', [ops.attn.a.length], ops.attn.a);
        put('self_attn', 'b_v', [ops.attn.bV.length], ops.attn.bV);
      }
      if (ops.mlp) {
        const { nb, bs } = ops.mlp;
        put('mlp', 'B1', [nb, bs, bs], ops.mlp.B1);
        put('mlp', 'B2', [nb, bs, bs], ops.mlp.B2);
        put('mlp', 'a', [ops.mlp.a.length], ops.mlp.a);
        put('mlp', 'b_gate', [ops.mlp.bGate.length], ops.mlp.bGate);
        put('mlp', 'b_up', [ops.mlp.bUp.length], ops.mlp.bUp);
      }
    }
  }
  if (d.lora) {
    const adapters = LoraAdapters.create(spec, { rank: d.lora.rank, alpha: d.lora.alpha, seed: seeds.lora });
    try {
      for (const p of adapters.parameters()) initial.set(p.name, { shape: [...p.variable.shape], values: new Float32Array(await p.variable.data()) });
    } finally {
      adapters.dispose();
    }
  }

  const last = (await latestCheckpoint(join(dir, CHECKPOINTS_DIR)))!;
  const state = await readWholeTrainState(last);
  if (state.scalars.step !== c.options.steps) throw new Error(`the last checkpoint ${last} is at step ${state.scalars.step}, not ${c.options.steps}`);
  const final = new Map<string, Tensor>([...state.trainable].map(([name, t]) => [name, { shape: t.shape, values: t.values }]));

  const lines = (await stageMetrics(run, stage)).filter((l) => l.loss !== undefined);
  return {
    stage,
    batches,
    selection: d.selection,
    initial,
    final,
    losses: lines.map((l) => l.loss!),
    lrs: lines.map((l) => l.lr!),
    gradNorms: lines.map((l) => l.grad_norm!),
    lrPlan: d.lr_plan,
    ...(fused ? { fused: new Map([...(await readAllF32(join(dir, 'model', 'model.safetensors')))]) } : {}),
  };
}

/**
 * sha256 of what the reference takes from apex (data, calibration sample, micro-batches, initial
 * operator and adapter tensors; not the selected units, which the reference computes itself): the fixture was made from these; when apex draws them differently the
 * fixture no longer applies and has to be made again (fixtures/refs/train/README.md).
 */
export function inputsDigest(r: Pick<TrajectoryRun, 'data' | 'calibration' | 'stages'>): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ sequences: r.data.sequences.map((s) => Array.from(s)), masks: r.data.lossMasks?.map((m) => Array.from(m)) ?? null, calibration: r.calibration }));
  for (const st of r.stages) {
    hash.update(JSON.stringify({ stage: st.stage, batches: st.batches }));
    for (const [name, t] of [...st.initial].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      hash.update(name);
      hash.update(JSON.stringify(t.shape));
      hash.update(new Uint8Array(t.values.buffer, t.values.byteOffset, t.values.byteLength));
    }
  }
  return hash.digest('hex');
}
