// `apex run` refuses data files that are not regular files (a named pipe, a device): a run reads
// its data files more than once (loaded for the stages, hashed again on every rerun to see
// whether they changed), which a pipe cannot serve: hashing one for the rerun check consumed it,
// or blocked for ever when nothing wrote to it. Refused with NOT_A_FILE (InputError, exit 3)
// naming the key, the file and the rule, before the run folder is touched, on a first run and on
// a rerun whose data file was swapped for a pipe. (--data of finetune, eval and analyze still
// reads pipes: test/data/data.test.ts.)
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExitCode, InputError } from '../../src/errors.js';
import { checkDataPaths, loadRunData } from '../../src/pipeline/run-data.js';
import { runPipeline } from '../../src/pipeline/run.js';
import { RunState } from '../../src/pipeline/run-state.js';
import { resolveConfig } from '../../src/run/config.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';
import { MICRO_DATA, MODEL } from './run-fixtures.js';

const RULE = 'apex run reads its data files again when it resumes or is rerun (it hashes them to see whether they changed), so they must be regular files';

function overrides(dir: string, train: string, extra: string[] = []): string[] {
  return [`model=${MODEL}`, `output=${path.join(dir, 'run')}`, 'data.seq_len=12', 'backend=wasm', 'method=vanilla', 'baseline.vanilla=false', `data.train=${train}`, ...extra];
}

/**
 * `p`'s outcome, or 'blocked' when it has not settled within `ms`: then the pipe is written once
 * so that a reader stuck on it (the old behaviour) lets the test process end.
 */
async function settled(p: Promise<unknown>, ms: number, fifo: string): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([p.catch((e: unknown) => e), new Promise((done) => { timer = setTimeout(() => done('blocked'), ms); })]);
  clearTimeout(timer);
  if (outcome === 'blocked') execFile('sh', ['-c', `printf 'released' > "${fifo}"`], () => undefined);
  return outcome;
}

describe.skipIf(process.platform === 'win32')('apex run: a data file that is a pipe or device', () => {
  it('is refused by the checks before writing (NOT_A_FILE, exit 3), naming the key, the file and the rule, without opening them', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-pipe-'));
    const fifo = path.join(dir, 'train.txt');
    execFileSync('mkfifo', [fifo]);
    const config = (await resolveConfig({ overrides: overrides(dir, fifo, ['data.eval=/dev/null']), cwd: dir })).config;
    const err = await settled(checkDataPaths(config), 10_000, fifo);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'NOT_A_FILE', exit: ExitCode.input });
    expect((err as Error).message).toBe(
      `2 data paths of the config cannot be read:\n` +
        `  data.train: ${fifo}: not a regular file (a named pipe); ${RULE} (a pipe can feed --data of apex finetune, eval or analyze, which read it once)\n` +
        `  data.eval: /dev/null: not a regular file (a device); ${RULE} (a pipe can feed --data of apex finetune, eval or analyze, which read it once)`,
    );
    rmSync(dir, { recursive: true, force: true });
  });

  it('a token-ids file that is a pipe is refused the same way (NOT_A_FILE, not NOT_FOUND), naming its key', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-pipe-'));
    const fifo = path.join(dir, 'train.safetensors');
    execFileSync('mkfifo', [fifo]);
    const config = (await resolveConfig({ overrides: [`model=${MODEL}`, `output=${path.join(dir, 'run')}`, 'data.seq_len=12', 'method=vanilla', 'baseline.vanilla=false', `data.train_input_ids=${fifo}`], cwd: dir })).config;
    const err = await settled(checkDataPaths(config), 10_000, fifo);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'NOT_A_FILE', exit: ExitCode.input });
    expect((err as Error).message).toContain(`data.train_input_ids: ${fifo} is not a regular file`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a new run with a pipe as its training data stops before the run folder exists', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-pipe-'));
    const fifo = path.join(dir, 'train.txt');
    execFileSync('mkfifo', [fifo]);
    const resolved = await resolveConfig({ overrides: overrides(dir, fifo), cwd: dir });
    const err = await settled(runPipeline({ resolved }), 20_000, fifo);
    expect(err).toMatchObject({ code: 'NOT_A_FILE', exit: ExitCode.input });
    expect((err as Error).message).toContain(`data.train: ${fifo}: not a regular file (a named pipe)`);
    expect(existsSync(path.join(dir, 'run'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a rerun whose data file became a pipe is refused at once, not left hashing the pipe', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'apex-run-pipe-'));
    const train = path.join(dir, 'train.txt');
    copyFileSync(MICRO_DATA[0]!, train);
    const resolved = await resolveConfig({ overrides: overrides(dir, `[${[train, ...MICRO_DATA.slice(1)].join(',')}]`), cwd: dir });
    const c = resolved.config;
    // A run that got as far as loading its data (its record holds the file's hash).
    const state = await RunState.open(c.output, c, { force: false, apexVersion: 'test' });
    const data = await loadRunData(c, await loadTokenizer(MODEL));
    await state.complete('data', 0, { train: data.train.source, eval: data.eval.source, calibration: data.calibration?.source ?? null });
    unlinkSync(train);
    execFileSync('mkfifo', [train]);
    const err = await settled(runPipeline({ resolved }), 20_000, train);
    expect(err).toMatchObject({ code: 'NOT_A_FILE', exit: ExitCode.input });
    expect((err as Error).message).toContain(`data.train: ${train}: not a regular file (a named pipe); ${RULE}`);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});
