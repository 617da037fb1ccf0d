/**
 * What `apex expand` reads and writes: either given directly (`<model> --operators/--updates
 * -o <out>`) or derived from a run folder and a stage number (APEX-METHOD §7):
 *
 *   model      stage 1: the run's base model (`base_model` of <run>/stages/1/apex_run.json,
 *              else `model.path` of <run>/analysis/analysis.json); stage n > 1: <run>/stages/<n-1>/model/
 *   operators  <run>/stages/<n>/operators.safetensors   (absent for vanilla / LoRA stages)
 *   updates    <run>/stages/<n>/trained.safetensors     (absent for the `operators` setting)
 *   output     <run>/stages/<n>/model/ (or -o: the same model written elsewhere)
 *
 * A run stage is only fused when its folder holds the record `apex finetune` writes last
 * (`stages/<n>/apex_run.json`), and stage n > 1 only from a previous fused model that holds
 * its own record (written last by `apex expand`, inside the atomic rename).
 *
 * Contradictory or incomplete flag sets are UsageErrors naming the flags, raised before
 * anything is read or written.
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { PROVENANCE_FILE, provenanceString } from './provenance.js';

export interface ExpandPathOptions {
  run?: string;
  stage?: number;
  model?: string;
  operators?: string;
  updates?: string;
  output?: string;
}

export interface ExpandPaths {
  /** Model argument for resolveModel (folder or Hub id). */
  readonly model: string;
  readonly operators?: string;
  readonly updates?: string;
  readonly output: string;
  readonly run?: string;
  readonly stage?: number;
  /** The model the run started from, when the run folder records it. */
  readonly baseModel?: string;
}

export const OPERATORS_FILE = 'operators.safetensors';
export const TRAINED_FILE = 'trained.safetensors';

export function stageDir(run: string, stage: number): string {
  return join(run, 'stages', String(stage));
}

export async function resolveExpandPaths(o: ExpandPathOptions): Promise<ExpandPaths> {
  if (o.run !== undefined) return runPaths(o);
  if (o.stage !== undefined) throw new UsageError('--stage needs --run <dir> (it picks the stage folder of a run); without a run give <model> --operators <file> -o <out>', 'FLAG_CONFLICT');
  if (o.model === undefined) {
    throw new UsageError('nothing to expand: give <model> --operators <file> [--updates <file>] -o <out>, or --run <dir> --stage <n>', 'MISSING_ARGUMENT');
  }
  if (o.operators === undefined && o.updates === undefined) {
    throw new UsageError('give --operators <operators.safetensors> and/or --updates <trained.safetensors>: there is nothing to fuse', 'MISSING_ARGUMENT');
  }
  if (o.output === undefined) throw new UsageError('-o/--output <folder> is required with <model> (also with --dry-run, which checks and reports what would be written there)', 'MISSING_ARGUMENT');
  return {
    model: o.model,
    output: o.output,
    ...(o.operators !== undefined ? { operators: o.operators } : {}),
    ...(o.updates !== undefined ? { updates: o.updates } : {}),
  };
}

async function runPaths(o: ExpandPathOptions): Promise<ExpandPaths> {
  const clash = [
    o.model !== undefined ? '<model>' : undefined,
    o.operators !== undefined ? '--operators' : undefined,
    o.updates !== undefined ? '--updates' : undefined,
  ].filter((x) => x !== undefined);
  if (clash.length > 0) {
    throw new UsageError(`--run takes the model, operators and trained tensors from the run folder; it cannot be combined with ${clash.join(', ')}`, 'FLAG_CONFLICT');
  }
  if (o.stage === undefined) throw new UsageError('--run needs --stage <n> (which stage to fuse)', 'MISSING_ARGUMENT');
  if (!Number.isSafeInteger(o.stage) || o.stage < 1) throw new UsageError(`--stage must be a positive integer, got ${o.stage}`, 'BAD_FLAG');
  const run = resolve(o.run!);
  const stage = o.stage;
  const dir = stageDir(run, stage);
  if (!(await isDir(run))) throw new InputError(`run folder ${run} does not exist`, 'NOT_FOUND');
  if (!(await isDir(dir))) throw new InputError(`${dir} does not exist: stage ${stage} of this run has not been trained (run \`apex finetune\` for it first)`, 'NOT_FOUND');
  await requireStageRecord(run, stage);
  const operators = join(dir, OPERATORS_FILE);
  const updates = join(dir, TRAINED_FILE);
  const hasOperators = await isFile(operators);
  const hasUpdates = await isFile(updates);
  if (!hasOperators && !hasUpdates) {
    throw new InputError(`${dir} holds neither ${OPERATORS_FILE} nor ${TRAINED_FILE}: has \`apex finetune\` finished stage ${stage}?`, 'NOT_FOUND');
  }
  const baseModel = await runBaseModel(run);
  let model: string;
  if (stage === 1) {
    if (baseModel === undefined) {
      throw new InputError(
        `cannot tell which model stage 1 of ${run} started from: neither 'base_model' in ${join(stageDir(run, 1), PROVENANCE_FILE)} nor 'model.path' in ${join(run, 'analysis', 'analysis.json')}`,
        'NOT_FOUND',
      );
    }
    model = baseModel;
  } else {
    model = join(stageDir(run, stage - 1), 'model');
    if (!(await isDir(model))) {
      throw new InputError(`${model} does not exist: fuse the previous stage first (apex expand --run ${run} --stage ${stage - 1})`, 'NOT_FOUND');
    }
    if (!(await isFile(join(model, PROVENANCE_FILE)))) {
      throw new InputError(
        `${model} has no ${PROVENANCE_FILE}: it is not a complete, verified fused model (apex expand writes that record last); fuse stage ${stage - 1} again (apex expand --run ${run} --stage ${stage - 1} --force)`,
        'INCOMPLETE_MODEL',
      );
    }
  }
  return {
    model,
    // -o writes the stage's model elsewhere (e.g. an export in another dtype or layout); the
    // run's own stages/<n>/model/ is then left as it is.
    output: o.output !== undefined ? resolve(o.output) : join(dir, 'model'),
    run,
    stage,
    ...(hasOperators ? { operators } : {}),
    ...(hasUpdates ? { updates } : {}),
    ...(baseModel !== undefined ? { baseModel } : {}),
  };
}

/**
 * A stage folder belongs to a run only with the record `apex finetune` writes last, when the
 * stage is complete (`stages/<n>/apex_run.json`, command `finetune`). Without it the folder is
 * an interrupted stage or not an apex run at all, and fusing what it holds would pass off
 * arbitrary files as the stage's result.
 */
async function requireStageRecord(run: string, stage: number): Promise<void> {
  const path = join(stageDir(run, stage), PROVENANCE_FILE);
  const record = await readJson(path);
  if (record === undefined) {
    throw new InputError(
      `${path} is missing: ${run} holds no finished stage ${stage} of an apex run (apex finetune writes that record last; resume an interrupted stage with \`apex finetune --resume\`)`,
      'NOT_A_RUN',
    );
  }
  const command = record && typeof record === 'object' ? (record as Record<string, unknown>).command : undefined;
  // apex finetune writes `finetune`; the stages of apex run record `run`.
  if (command !== 'finetune' && command !== 'run') {
    throw new InputError(`${path} is not a stage record of apex finetune or apex run (command ${JSON.stringify(command ?? null)}): ${run} is not an apex run folder`, 'NOT_A_RUN');
  }
}

/** The run's base model: `base_model` of stage 1's apex_run.json, else analysis.json's `model.path`. */
export async function runBaseModel(run: string): Promise<string | undefined> {
  const fromStage = provenanceString(await readJson(join(stageDir(run, 1), PROVENANCE_FILE)), 'base_model');
  if (fromStage !== undefined) return fromStage;
  const analysis = await readJson(join(run, 'analysis', 'analysis.json'));
  const model = analysis && typeof analysis === 'object' ? (analysis as Record<string, unknown>).model : undefined;
  if (typeof model === 'string' && model !== '') return model;
  const path = model && typeof model === 'object' ? (model as Record<string, unknown>).path : undefined;
  return typeof path === 'string' && path !== '' ? path : undefined;
}

/** A JSON file's content; undefined when it is absent; InputError when it is not JSON. */
export async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InputError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'UNREADABLE');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new InputError(`${path}: not valid JSON (${(e as Error).message})`, 'BAD_JSON');
  }
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}
