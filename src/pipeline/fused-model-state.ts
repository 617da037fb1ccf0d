/**
 * Whether a run stage's fused model (`stages/<n>/model/`) is done, for `apex finetune --resume`
 * to decide whether to fuse the stage again. A config.json is not enough: a folder copied in
 * half, written by an older apex, or fused from other training outputs must not count. The
 * model counts as complete only when
 *
 *   - its `apex_run.json` is there and was written by `apex expand` (the record is written
 *     last, after verification, inside the temporary folder that is renamed into place);
 *   - every shard that record lists is on disk with the recorded size;
 *   - it was fused from this stage's current training outputs: the sha256 of operators /
 *     trained tensors it records as inputs equal those the stage record lists as outputs;
 *   - its input model's shards are those the stage was trained from (the stage record's input
 *     model), and for stage n > 1 the current fused model of stage n-1 (the input shard hashes
 *     equal that model's recorded output shards).
 *
 * Everything is compared through the records (sizes on disk, hashes in JSON), so the check
 * costs no more than reading a few small files, whatever the size of the model.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readJson, OPERATORS_FILE, stageDir, TRAINED_FILE } from './expand-paths.js';
import { PROVENANCE_FILE, type FileRecord } from './provenance.js';

export type FusedModelState =
  | { readonly kind: 'absent' }
  | { readonly kind: 'complete' }
  /** Something is there, but not a complete fusion of this stage: fuse again over it. */
  | { readonly kind: 'stale'; readonly reason: string };

interface ProvenanceView {
  readonly command?: unknown;
  readonly inputs?: Readonly<Record<string, { readonly files?: readonly FileRecord[] } | undefined>>;
  readonly outputs?: Readonly<Record<string, { readonly files?: readonly FileRecord[] } | undefined>>;
}

/**
 * `previousFusedAgain`: stage − 1's fused model is about to be fused again (a dry run of apex run
 * looks ahead): fusion is deterministic, so it will be the model this stage trained from, which
 * the check against the stage's own record covers; the check against stage − 1's model as it is
 * now (missing or stale) is left out.
 */
export async function fusedModelState(run: string, stage: number, options: { previousFusedAgain?: boolean } = {}): Promise<FusedModelState> {
  const dir = join(stageDir(run, stage), 'model');
  const present = await stat(dir).then((s) => s.isDirectory(), () => false);
  if (!present) return { kind: 'absent' };
  const record = await readRecord(join(dir, PROVENANCE_FILE));
  if (record === undefined) return stale(`no ${PROVENANCE_FILE} (an incomplete or unverified model)`);
  if (record === 'unreadable') return stale(`${PROVENANCE_FILE} is unreadable`);
  if (record.command !== 'expand') return stale(`${PROVENANCE_FILE} was not written by apex expand`);

  const files = record.outputs?.model?.files;
  if (!Array.isArray(files) || !files.some((f) => f.file.endsWith('.safetensors'))) return stale(`${PROVENANCE_FILE} lists no shards`);
  for (const f of files) {
    const size = await stat(join(dir, f.file)).then((s) => (s.isFile() ? s.size : -1), () => -1);
    if (size !== f.bytes) return stale(`${f.file.endsWith('.safetensors') ? 'shard ' : ''}${f.file} is ${size < 0 ? 'missing' : `${size} bytes, the record says ${f.bytes}`}`);
  }

  const stageRecord = await readRecord(join(stageDir(run, stage), PROVENANCE_FILE));
  const trained = stageRecord !== undefined && stageRecord !== 'unreadable' ? stageRecord.outputs?.stage?.files ?? [] : [];
  for (const [file, input] of [[OPERATORS_FILE, 'operators'], [TRAINED_FILE, 'updates']] as const) {
    const want = trained.find((f) => f.file === file)?.sha256;
    const used = record.inputs?.[input]?.files?.[0]?.sha256;
    if (want !== used) return stale(`it was not fused from this stage's ${file}`);
  }

  // Fused into the weights the stage was trained from (its record's input model), when recorded.
  const trainedFrom = stageRecord !== undefined && stageRecord !== 'unreadable' ? stageRecord.inputs?.model?.files : undefined;
  if (Array.isArray(trainedFrom) && trainedFrom.some((f) => f.file.endsWith('.safetensors')) && !sameFiles(trainedFrom, record.inputs?.model?.files)) {
    return stale('it was not fused into the weights this stage was trained from');
  }

  if (stage > 1 && options.previousFusedAgain !== true) {
    const previous = await readRecord(join(stageDir(run, stage - 1), 'model', PROVENANCE_FILE));
    const want = previous !== undefined && previous !== 'unreadable' ? previous.outputs?.model?.files : undefined;
    if (!sameFiles(want, record.inputs?.model?.files)) return stale(`it was not fused from the current model of stage ${stage - 1}`);
  }
  return { kind: 'complete' };
}

function stale(reason: string): FusedModelState {
  return { kind: 'stale', reason };
}

async function readRecord(path: string): Promise<ProvenanceView | undefined | 'unreadable'> {
  try {
    const r = await readJson(path);
    return r === undefined ? undefined : r !== null && typeof r === 'object' ? (r as ProvenanceView) : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/** The same weight files (a model's record also lists its config and tokenizer files; an input record only its shards). */
function sameFiles(all: readonly FileRecord[] | undefined, other: readonly FileRecord[] | undefined): boolean {
  if (!Array.isArray(all) || !Array.isArray(other)) return false;
  const weights = (list: readonly FileRecord[]) => list.filter((f) => f.file.endsWith('.safetensors'));
  const a = weights(all);
  const b = weights(other);
  if (a.length !== b.length) return false;
  const key = (f: FileRecord) => `${f.file}\0${f.sha256}`;
  const want = new Set(a.map(key));
  return b.every((f) => want.has(key(f)));
}
