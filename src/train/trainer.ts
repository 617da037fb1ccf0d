/**
 * The training loop of one stage, readable top to bottom: restore or start → for each
 * optimizer step: micro-batches (forward with the stage's hooks and the score recorder,
 * causal-LM loss, gradients of the trainable variables, accumulation) → masks → global-norm
 * clipping → learning rate from the plan → AdamW → recorder counts → evaluation, metrics,
 * checkpoint.
 *
 * What it guarantees:
 * - Resume is exact: a checkpoint holds the trainable tensors, AdamW moments, step counters,
 *   data position, Rng state and recorder counts at a step boundary, so N straight steps and
 *   N/2 + resume + N/2 follow the same computation (same losses, same weights).
 * - An abort (Ctrl-C) is honoured between micro-batches: the partial step is dropped, a
 *   checkpoint of the last completed step is saved, and InterruptedError is thrown. It also
 *   stops a held-out evaluation: before step 1 nothing is saved (nothing was trained); after
 *   step s the checkpoint of step s records the evaluation as owed (`pendingEval`), and the
 *   resumed run runs it before its first step, logging it as an eval-only line of step s.
 *   The evaluation draws no random numbers and moves no data position, so the training that
 *   follows is the same as without the interruption.
 * - A NaN/Inf loss or gradient stops training with a VerificationError naming it; nothing
 *   more is saved.
 * The model's frozen tensors are plain tensors (not variables) and never change; masked
 * entries of partially trained tensors keep their bits (AdamW skips them).
 */
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { InputError, InterruptedError, UsageError, VerificationError } from '../errors.js';
import type { LayerHooks, LayerObserver } from '../model/layer-hooks.js';
import type { ModelWeights } from '../model/model-weights.js';
import { hasNonFinite, readFloat32, readScalar } from '../model/tensor-read.js';
import { tapeGradients } from '../model/tape-gradients.js';
import { Rng } from '../util/rng.js';
import { AdamW, type AdamWOptions, type OptimizedParameter } from './adamw.js';
import { BatchStream } from './batch-stream.js';
import type { SequenceSet } from './data.js';
import { GradientAccumulator } from './grad-accumulation.js';
import { clipCoefficient, globalNorm } from './grad-clip.js';
import { batchTensors, targetCount, evaluateHeldOut, type HeldOutResult } from './held-out-eval.js';
import { learningRate, type LrPlan } from './lr-schedule.js';
import { appendMetrics, truncateMetrics, type MetricsLine } from './metrics-log.js';
import { modelLoss } from './model-loss.js';
import { prepareTransforms, type PreparedTransforms } from './prepared-transforms.js';
import { activationTokenWeights, type TrainingScoreRecorder } from './score-recorder.js';
import { checkTrainStateSpace, type DataPosition, type LoadedTrainState, readTrainStateTensors, type RecomputeSpan, saveTrainState, type TrainableTensor, type TrainStateScalars, trainStateBytes, withRecomputeSpan } from './train-state.js';
import type { ResumeKey } from './stage-resume-key.js';
import { fileChanges, type HashedFile } from '../util/file-changes.js';

export interface StepReport {
  readonly stage: number;
  readonly step: number;
  readonly steps: number;
  readonly globalStep: number;
  readonly tokens: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  readonly tokensPerSecond: number;
  readonly eval?: HeldOutResult;
  readonly elapsed: number;
  /** Seconds left at the pace of this process so far. */
  readonly etaSeconds: number;
}

export interface TrainerOptions {
  readonly model: ModelWeights;
  /** Every trainable variable with its optimizer name, mask and decay flag. */
  readonly params: readonly OptimizedParameter[];
  readonly hooks?: (layer: number) => LayerHooks | undefined;
  /** The APEX score recorder (absent for baselines). */
  readonly recorder?: TrainingScoreRecorder;
  readonly train: SequenceSet;
  readonly eval?: SequenceSet;
  readonly stage: number;
  /** Optimizer steps of this stage. */
  readonly steps: number;
  readonly lrPlan: LrPlan;
  /** Steps of the earlier stages: global step = offset + stage step. */
  readonly globalStepOffset: number;
  readonly batchSize: number;
  readonly gradAccum: number;
  /**
   * Sequences per batch of the held-out evaluations (default: batchSize). Changes their speed and
   * memory only: the held-out loss is a sum over sequences (float rounding aside).
   */
  readonly evalBatchSize?: number;
  /**
   * With gradient accumulation, compute the hooks' weight transforms once per step and push
   * the summed gradient back through them once (prepared-transforms.ts), and once per held-out
   * evaluation; default on. Off: every micro-batch transforms (and differentiates) them itself
   * (the reference for tests).
   */
  readonly prepareTransforms?: boolean;
  /**
   * Recompute each decoder layer's activations in the backward pass instead of keeping them
   * (activation checkpointing, recomputed-layer.ts): less memory, about one more forward of the
   * layers per micro-batch; the same losses, gradients and scores. The held-out evaluations
   * between steps then also run one layer's intermediates at a time. Default off.
   */
  readonly recomputeActivations?: boolean;
  /** Global-norm clipping threshold; 0 = no clipping. */
  readonly gradClip: number;
  readonly adamw: AdamWOptions;
  /** Evaluate every this many steps (0: only before the first and after the last step). */
  readonly evalEvery: number;
  /** Checkpoint every this many steps (0: only after the last step and on interrupt). */
  readonly saveEvery: number;
  readonly keepCheckpoints: number;
  readonly checkpointsDir: string;
  readonly metricsPath: string;
  /** Seed of the data order (the first epoch's shuffle seed is drawn from it). */
  readonly dataSeed: number;
  readonly resumeFrom?: LoadedTrainState;
  /** Recorded in every checkpoint for the caller's resume check (stage-resume-key.ts). */
  readonly resumeKey?: ResumeKey;
  /** Recorded in every checkpoint: the backend that trained. */
  readonly backend?: string;
  readonly signal?: AbortSignal;
  readonly progress?: (message: string) => void;
  /** Said after "saved a checkpoint" when interrupted; default "continue with --resume" (apex finetune's flag). */
  readonly resumeHint?: string;
  /** Called after each step; a returned promise is awaited before the next step (a caller can pace or interleave runs). */
  readonly onStep?: (report: StepReport) => unknown;
}

export interface TrainerResult {
  /** Steps completed (= options.steps). */
  readonly steps: number;
  /** The step training started from: 0, or the resumed checkpoint's step. */
  readonly startStep: number;
  readonly tokens: number;
  /** Loss of the last step run by this process (undefined when it ran none). */
  readonly finalLoss: number | undefined;
  /** The last evaluation of this process. */
  readonly eval: HeldOutResult | undefined;
  /** Wall seconds of this process's training loop. */
  readonly seconds: number;
  readonly tokensPerSecond: number;
  /** Activation recomputation over the stage's sessions, this one included (train-state.ts). */
  readonly recomputeFrom: readonly RecomputeSpan[];
}

/** sha256 over the training set: its sequence length, then each sequence's length, ids and loss mask. */
export function sequenceSetDigest(set: SequenceSet): string {
  const hash = createHash('sha256');
  const u32 = new Uint32Array(1);
  const word = (v: number) => { u32[0] = v; hash.update(new Uint8Array(u32.buffer)); };
  word(set.seqLen);
  word(set.sequences.length);
  set.sequences.forEach((seq, i) => {
    word(seq.length);
    hash.update(new Uint8Array(seq.buffer, seq.byteOffset, seq.byteLength));
    const mask = set.lossMasks?.[i];
    if (mask) hash.update(mask);
  });
  return hash.digest('hex');
}

/**
 * Refuses to resume on other training data or with another data-order seed: the checkpoint's
 * data position would then point into a different stream, silently (or past its end). Like
 * every CHECKPOINT_MISMATCH, exit 2: the options given contradict the checkpoint's.
 */
function checkSameData(state: LoadedTrainState, fingerprint: string, seed: number, count: number, files: readonly HashedFile[]): void {
  const s = state.scalars;
  const hint = 'resume with the data and --seed of the interrupted run, or pass --force to start the stage over';
  if (s.dataFingerprint !== undefined && s.dataFingerprint !== fingerprint) {
    // Which file changed, when the checkpoint recorded them; else the same files read differently
    // (another --seq-len, --samples or tokenizer), said by the sequences' digest.
    const changed = s.dataFiles !== undefined ? fileChanges(s.dataFiles, files) : [];
    const what = changed.length > 0 ? `${changed.slice(0, 4).join('; ')}${changed.length > 4 ? `; and ${changed.length - 4} more` : ''}; ` : '';
    throw new UsageError(`${state.path} was made on other training data (${what}${count} sequences now; data sha256 ${s.dataFingerprint.slice(0, 12)}… then, ${fingerprint.slice(0, 12)}… now); ${hint}`, 'CHECKPOINT_MISMATCH');
  }
  if (s.dataSeed !== undefined && s.dataSeed !== seed) {
    throw new UsageError(`${state.path} was made with another data-order seed (${s.dataSeed}, now ${seed}); ${hint}`, 'CHECKPOINT_MISMATCH');
  }
  // Checkpoints of older versions record neither: at least the position must fit the data.
  if (s.data.index > count) {
    throw new UsageError(`${state.path}: its data position (sequence ${s.data.index} of an epoch) is past the ${count} training sequences now; ${hint}`, 'CHECKPOINT_MISMATCH');
  }
}

/**
 * Copies a checkpoint's trainable tensors into the parameters' variables and their moments into
 * the optimizer, one tensor at a time (readTrainStateTensors), after checking that the checkpoint
 * holds exactly these tensors in these shapes.
 */
async function restoreTrainState(params: readonly OptimizedParameter[], optimizer: AdamW, state: LoadedTrainState): Promise<void> {
  const saved = [...state.trainable.keys()].sort();
  const wanted = params.map((p) => p.name).sort();
  if (saved.length !== wanted.length || saved.some((n, i) => n !== wanted[i])) {
    throw new UsageError(
      `${state.path}: the checkpoint's trainable tensors (${saved.length}) differ from this stage's (${wanted.length}); it was made with other options (method, setting, selection or LoRA rank); resume with the options of the interrupted run, or pass --force to start the stage over`,
      'CHECKPOINT_MISMATCH',
    );
  }
  const byName = new Map(params.map((p) => [p.name, p]));
  for (const p of params) {
    const shape = state.trainable.get(p.name)!;
    if (shape.length !== p.variable.shape.length || shape.some((d, i) => d !== p.variable.shape[i])) {
      throw new UsageError(`${state.path}: tensor '${p.name}' has shape [${shape}] in the checkpoint, [${p.variable.shape}] in this stage`, 'CHECKPOINT_MISMATCH');
    }
  }
  await readTrainStateTensors(state, (t) => {
    const p = byName.get(t.name)!;
    tf.tidy(() => p.variable.assign(tf.tensor(t.values, p.variable.shape, 'float32')));
    try {
      optimizer.restoreMoments(t.name, t.firstMoment, t.secondMoment);
    } catch (e) {
      throw new UsageError(`${state.path}: ${(e as Error).message}`, 'CHECKPOINT_MISMATCH');
    }
  });
  optimizer.restoreStep(state.optimizerStep);
}

/** The name of the first gradient holding NaN/Inf, for the error message. */
async function nonFiniteGradient(grads: ReadonlyMap<string, tf.Tensor>): Promise<string> {
  for (const [name, g] of grads) {
    if (await hasNonFinite(g)) return name;
  }
  return '(unknown)';
}

/**
 * Adds to the step's mean gradients what flows back through the prepared transforms from the
 * mean gradients of the transformed tensors (`upstream`, keyed by their index), and frees those.
 */
function addThroughTransforms(mean: Map<string, tf.Tensor>, prepared: PreparedTransforms, upstream: Map<string, tf.Tensor>, params: readonly OptimizedParameter[]): void {
  const through = prepared.backward(prepared.tensors.map((_t, i) => upstream.get(String(i))), params.map((p) => p.variable));
  tf.dispose([...upstream.values()]);
  for (const p of params) {
    const g = through.get(p.variable);
    const direct = mean.get(p.name);
    if (!g) {
      if (!direct) mean.set(p.name, tf.zerosLike(p.variable));
      continue;
    }
    if (!direct) {
      mean.set(p.name, g);
      continue;
    }
    mean.set(p.name, tf.tidy(() => tf.add(direct, g)));
    tf.dispose([direct, g]);
  }
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * A held-out loss that is NaN/Inf: weights that diverged while the training loss stayed finite
 * (huge but finite weights overflow on other data), or a model broken before training.
 */
function finiteEval(result: HeldOutResult, step: number, stage: number): HeldOutResult {
  if (Number.isFinite(result.loss)) return result;
  throw new VerificationError(
    step === 0
      ? `the held-out loss is ${result.loss} before training (stage ${stage}): a weight holds NaN/Inf or the forward pass overflows`
      : `the held-out loss is ${result.loss} after step ${step} of stage ${stage}: the weights diverged (lower --lr, or keep --grad-clip on); the stage's files were not written`,
    'NON_FINITE_LOSS',
  );
}

/** What `heldOutOrStop` returns when the signal stopped the evaluation. */
const STOPPED = Symbol('stopped');

/**
 * The held-out loss of the model as it is now, or STOPPED when Ctrl-C stopped the evaluation
 * (the caller decides what is kept). Any other failure is thrown.
 */
async function heldOutOrStop(o: TrainerOptions, heldOut: SequenceSet): Promise<HeldOutResult | typeof STOPPED> {
  try {
    return await evaluateHeldOut(o.model, heldOut, { batchSize: o.evalBatchSize ?? o.batchSize, hooks: o.hooks, prepare: o.prepareTransforms !== false, ...(o.signal ? { signal: o.signal } : {}), ...(o.recomputeActivations ? { recompute: true } : {}) });
  } catch (e) {
    if (o.signal?.aborted) return STOPPED;
    throw e;
  }
}

function announceEvaluation(o: TrainerOptions, heldOut: SequenceSet, step: number): void {
  const when = step === 0 ? 'before training' : `at step ${step}`;
  o.progress?.(`stage ${o.stage}: held-out evaluation ${when} (${heldOut.sequences.length} sequences)`);
}

/**
 * How to continue after Ctrl-C stopped the evaluation after `step`, which the checkpoint of that
 * step owes: the caller's resume hint ("saved a checkpoint, <hint>" reads as after any Ctrl-C).
 */
function owedEvalHint(o: TrainerOptions, step: number): string {
  return `${o.resumeHint ?? 'continue with --resume'}, which runs the held-out evaluation at step ${step} first`;
}

export async function train(o: TrainerOptions): Promise<TrainerResult> {
  if (o.evalBatchSize !== undefined && !(Number.isSafeInteger(o.evalBatchSize) && o.evalBatchSize >= 1)) {
    throw new RangeError(`evalBatchSize must be an integer >= 1, got ${o.evalBatchSize}`);
  }
  const optimizer = new AdamW(o.params, o.adamw);
  const accumulator = new GradientAccumulator();
  const variables = o.params.map((p) => p.variable);
  try {
    let rng: Rng;
    let stream: BatchStream;
    let step = 0;
    let tokens = 0;
    let elapsedBefore = 0;
    let lastEval: HeldOutResult | undefined;
    // The checkpoint resumed from owes its step's held-out evaluation (Ctrl-C stopped it).
    let evalOwed = o.resumeFrom?.scalars.pendingEval === true;
    const dataFingerprint = sequenceSetDigest(o.train);
    const dataFiles = o.train.source.paths.map((file, i) => ({ file, sha256: o.train.source.sha256[i] ?? '' }));
    if (o.resumeFrom) {
      const s = o.resumeFrom.scalars;
      checkSameData(o.resumeFrom, dataFingerprint, o.dataSeed, o.train.sequences.length, dataFiles);
      // Before anything on disk changes (the metrics are truncated below): a corrupt tensor
      // stops the resume here with the run folder as it was.
      await restoreTrainState(o.params, optimizer, o.resumeFrom);
      rng = Rng.fromState([...s.rng]);
      stream = new BatchStream(o.train.sequences.length, rng, s.data);
      step = s.step;
      tokens = s.tokens;
      elapsedBefore = (await truncateMetrics(o.metricsPath, step, evalOwed)).at(-1)?.elapsed ?? 0;
    } else {
      rng = new Rng(o.dataSeed);
      stream = new BatchStream(o.train.sequences.length, rng);
      await truncateMetrics(o.metricsPath, undefined);
    }
    let boundary: { data: DataPosition; rng: number[] } = { data: stream.position(), rng: rng.state() };
    // This session's setting from the step it starts at, after those of the sessions before it.
    const recomputeFrom = withRecomputeSpan(o.resumeFrom?.scalars.recomputeFrom, step, o.recomputeActivations === true);
    const scalars = (): TrainStateScalars => ({
      stage: o.stage,
      step,
      globalStep: o.globalStepOffset + step,
      tokens,
      data: boundary.data,
      rng: boundary.rng,
      lrPlan: o.lrPlan,
      dataFingerprint,
      dataSeed: o.dataSeed,
      dataFiles,
      ...(o.recorder ? { recorder: o.recorder.state() } : {}),
      ...(o.resumeKey ? { settings: o.resumeKey } : {}),
      ...(o.backend ? { backend: o.backend } : {}),
      ...(evalOwed ? { pendingEval: true } : {}),
      recomputeFrom,
    });
    // The stage saves a checkpoint after its last step at the latest: refuse now, before the
    // first evaluation and step, not after training, when there is no room for one.
    if (step < o.steps) {
      await checkTrainStateSpace(o.checkpointsDir, trainStateBytes(new Map(o.params.map((p) => [p.name, { shape: p.variable.shape }])), scalars()));
    }

    if (!o.resumeFrom && o.eval) {
      // Before the first step nothing is lost by stopping, so Ctrl-C stops this evaluation (a
      // large held-out set takes a while) and nothing is saved.
      announceEvaluation(o, o.eval, 0);
      const before = await heldOutOrStop(o, o.eval);
      if (before === STOPPED) throw new InterruptedError(`interrupted during the held-out evaluation before the first step of stage ${o.stage}; nothing was trained, run the same command again`);
      lastEval = finiteEval(before, 0, o.stage);
      await appendMetrics(o.metricsPath, { step: 0, tokens: 0, eval_loss: lastEval.loss, eval_ppl: lastEval.ppl, elapsed: 0 });
    }
    const startStep = step;
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    const save = async () =>
      saveTrainState(
        o.checkpointsDir,
        {
          scalars: scalars(),
          trainable: new Map<string, TrainableTensor>(
            o.params.map((p) => [p.name, { shape: p.variable.shape, values: () => readFloat32(p.variable) }]),
          ),
          optimizer: optimizer.moments(),
        },
        o.keepCheckpoints,
      );

    if (evalOwed) {
      // The evaluation after step `step` that Ctrl-C stopped, before anything else: logged as
      // an eval-only line of that step, as the uninterrupted run would have logged it. Stopped
      // again, nothing is saved: the checkpoint still owes it. (Its step may be the last one:
      // the loop below then runs no step, and the stage ends with this evaluation.)
      if (o.eval) {
        announceEvaluation(o, o.eval, step);
        const owed = await heldOutOrStop(o, o.eval);
        if (owed === STOPPED) throw new InterruptedError(`interrupted during the held-out evaluation at step ${step} of stage ${o.stage}; the checkpoint at step ${step} still owes it, ${owedEvalHint(o, step)}`);
        lastEval = finiteEval(owed, step, o.stage);
        await appendMetrics(o.metricsPath, { step, tokens, eval_loss: lastEval.loss, eval_ppl: lastEval.ppl, elapsed: elapsedBefore + seconds() });
        o.progress?.(`stage ${o.stage}: held-out evaluation at step ${step}: eval ppl ${lastEval.ppl.toFixed(2)}`);
      }
      evalOwed = false;
    }

    let finalLoss: number | undefined;
    const stepTokens = o.gradAccum * o.batchSize * o.train.seqLen;
    const prepare = o.hooks !== undefined && o.gradAccum > 1 && o.prepareTransforms !== false;
    while (step < o.steps) {
      const t0 = performance.now();
      let lossSum = 0;
      const prepared: PreparedTransforms | undefined = prepare ? prepareTransforms(o.model, o.hooks!) : undefined;
      const preparedGrads = new GradientAccumulator();
      let mean: Map<string, tf.Tensor>;
      // The step's micro-batches, drawn up front: their target counts weight them. With equal
      // counts (packed text) each gets 1/k, the plain mean of the micro-batch means; with unequal
      // ones (chat data) each micro-batch's loss is its token sum and the step divides by all its
      // targets, so batch B × k accumulation equals one batch of k·B (as Hugging Face's Trainer
      // since 4.46, and held-out evaluation here), not a mean that over-weights short answers.
      const micros = Array.from({ length: o.gradAccum }, () => stream.next(o.batchSize));
      const targets = micros.map((indices) => indices.reduce((n, i) => n + targetCount(o.train, i), 0));
      const tokenWeighted = targets.some((n) => n !== targets[0]);
      // What the summed gradients and losses of the micro-batches are divided by.
      const divisor = tokenWeighted ? targets.reduce((a, b) => a + b, 0) : o.gradAccum;
      try {
        for (let micro = 0; micro < o.gradAccum; micro++) {
          if (o.signal?.aborted) {
            accumulator.dispose();
            preparedGrads.dispose();
            o.recorder?.discardStep();
            await save();
            throw new InterruptedError(`interrupted at step ${step} of stage ${o.stage}; saved a checkpoint, ${o.resumeHint ?? 'continue with --resume'}`);
          }
          const indices = micros[micro]!;
          const { ids, mask } = batchTensors(o.train, indices);
          let observe: LayerObserver | undefined;
          if (o.recorder) {
            const weights = new Float32Array(indices.length * o.train.seqLen);
            indices.forEach((s, b) => weights.set(activationTokenWeights(o.train, s), b * o.train.seqLen));
            observe = o.recorder.beginMicroBatch(weights, indices.length, o.train.seqLen);
          }
          try {
            const hooks = prepared?.hooks ?? o.hooks;
            const xs: tf.Tensor[] = prepared ? [...variables, ...prepared.tensors] : variables;
            const { value, grads } = tapeGradients(
              () => modelLoss(o.model, ids, mask, { ...(hooks ? { hooks } : {}), ...(observe ? { observe } : {}), ...(tokenWeighted ? { reduction: 'sum' as const } : {}), ...(o.recomputeActivations ? { recompute: true } : {}) }),
              xs,
              undefined,
              true,
            );
            const loss = await readScalar(value);
            const named = new Map<string, tf.Tensor>();
            // Prepared, the weights the transforms replace get their gradient after the step
            // (addThroughTransforms), not from the micro-batches: no zeros are summed for them.
            o.params.forEach((p, i) => {
              const g = grads[i] ?? (prepared?.replaces(p.variable) ? undefined : tf.zerosLike(p.variable));
              if (g) named.set(p.name, g);
            });
            accumulator.add(named);
            const transformed = new Map<string, tf.Tensor>();
            prepared?.tensors.forEach((t, i) => transformed.set(String(i), grads[variables.length + i] ?? tf.zerosLike(t)));
            if (prepared) preparedGrads.add(transformed);
            tf.dispose([value, ...named.values(), ...transformed.values()]);
            if (!Number.isFinite(loss)) {
              throw new VerificationError(`training loss is ${loss} at step ${step + 1} of stage ${o.stage} (micro-batch of sequences ${indices.join(', ')}); the stage's files were not written`, 'NON_FINITE_LOSS');
            }
            lossSum += loss;
          } finally {
            tf.dispose([ids, mask]);
          }
        }
        mean = accumulator.take(1 / divisor);
        if (prepared) addThroughTransforms(mean, prepared, preparedGrads.take(1 / divisor), o.params);
      } finally {
        prepared?.dispose();
        preparedGrads.dispose();
      }
      // What the update reads of each gradient: masked, or only the trained lines of a tensor
      // that trains some rows/columns (AdamW.trainedGradient), which clipping and the NaN check see too.
      const masked = new Map<string, tf.Tensor>();
      for (const p of o.params) {
        const g = mean.get(p.name)!;
        const trained = optimizer.trainedGradient(p.name, g);
        masked.set(p.name, trained);
        if (trained !== g) g.dispose();
      }
      // Clipping scales the gradients where AdamW reads them (clipCoefficient).
      const clipped = o.gradClip > 0 ? await clipCoefficient(masked, o.gradClip) : { coefficient: undefined, norm: await globalNorm(masked) };
      try {
        if (!Number.isFinite(clipped.norm)) {
          throw new VerificationError(`the gradient of '${await nonFiniteGradient(masked)}' holds NaN/Inf at step ${step + 1} of stage ${o.stage}; the stage's files were not written`, 'NON_FINITE_GRADIENT');
        }
        const lr = learningRate(o.globalStepOffset + step, o.lrPlan);
        optimizer.apply(masked, lr, clipped.coefficient);
        await o.recorder?.commitStep();
        step += 1;
        tokens += stepTokens;
        boundary = { data: stream.position(), rng: rng.state() };
        const loss = lossSum / divisor;
        finalLoss = loss;
        const stepSeconds = (performance.now() - t0) / 1000;
        const evalDue = o.eval !== undefined && (step === o.steps || (o.evalEvery > 0 && step % o.evalEvery === 0));
        if (evalDue) announceEvaluation(o, o.eval!, step);
        const evaluated = evalDue ? await heldOutOrStop(o, o.eval!) : undefined;
        const evaluation = evaluated !== undefined && evaluated !== STOPPED ? finiteEval(evaluated, step, o.stage) : undefined;
        if (evaluation) lastEval = evaluation;
        const elapsed = elapsedBefore + seconds();
        const line: MetricsLine = {
          step,
          tokens,
          loss,
          lr,
          grad_norm: clipped.norm,
          tokens_per_s: stepTokens / stepSeconds,
          ...(evaluation ? { eval_loss: evaluation.loss, eval_ppl: evaluation.ppl } : {}),
          elapsed,
        };
        await appendMetrics(o.metricsPath, line);
        if (evaluated === STOPPED) {
          // Step `step` is complete and logged; only its evaluation is missing. The checkpoint
          // of this step records it as owed, so the resumed run evaluates before training on.
          evalOwed = true;
          await save();
          throw new InterruptedError(`interrupted during the held-out evaluation at step ${step} of stage ${o.stage}; saved a checkpoint, ${owedEvalHint(o, step)}`);
        }
        const etaSeconds = (seconds() / (step - startStep)) * (o.steps - step);
        o.progress?.(
          `stage ${o.stage} step ${step}/${o.steps} loss ${loss.toFixed(4)} lr ${lr.toExponential(2)} ${Math.round(stepTokens / stepSeconds)} tok/s` +
            `${evaluation ? ` eval ppl ${evaluation.ppl.toFixed(2)}` : ''} ETA ${formatDuration(etaSeconds)}`,
        );
        await o.onStep?.({ stage: o.stage, step, steps: o.steps, globalStep: o.globalStepOffset + step, tokens, loss, lr, gradNorm: clipped.norm, tokensPerSecond: stepTokens / stepSeconds, ...(evaluation ? { eval: evaluation } : {}), elapsed, etaSeconds });
        if (step === o.steps || (o.saveEvery > 0 && step % o.saveEvery === 0)) await save();
      } finally {
        tf.dispose([...masked.values(), ...(clipped.coefficient ? [clipped.coefficient] : [])]);
      }
    }
    const ran = seconds();
    return {
      steps: step,
      startStep,
      tokens,
      finalLoss,
      eval: lastEval,
      seconds: ran,
      tokensPerSecond: ran > 0 ? ((step - startStep) * stepTokens) / ran : 0,
      recomputeFrom,
    };
  } finally {
    accumulator.dispose();
    o.recorder?.discardStep();
    optimizer.dispose();
  }
}
