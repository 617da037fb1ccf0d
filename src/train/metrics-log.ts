/**
 * `metrics.jsonl` of a stage: one JSON object per line, one line per optimizer step (and one
 * for the evaluation before the first step), appended as training goes. A held-out evaluation
 * that Ctrl-C stopped leaves its step's line without eval fields; the resumed run runs it first
 * and logs it as an eval-only line of the same step, right after that step's line. A resumed
 * run first cuts the file back to its checkpoint's step, so no step is ever logged twice.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ioError } from '../io/io-error.js';

export interface MetricsLine {
  /** Optimizer steps completed in this stage. */
  readonly step: number;
  /** Tokens (sequence positions) trained on in this stage so far. */
  readonly tokens: number;
  /** Mean training loss of the step (absent on eval-only lines: before step 1, and an owed evaluation run on resume). */
  readonly loss?: number;
  readonly lr?: number;
  /** Global gradient norm before clipping. */
  readonly grad_norm?: number;
  readonly tokens_per_s?: number;
  /** Held-out mean NLL and perplexity, on the steps that evaluate. */
  readonly eval_loss?: number;
  readonly eval_ppl?: number;
  /** Seconds since the stage started, resumed runs included. */
  readonly elapsed: number;
}

export async function appendMetrics(path: string, line: MetricsLine): Promise<void> {
  await appendFile(path, `${JSON.stringify(line)}\n`).catch((e: unknown) => { throw ioError(path, 'append to the metrics log', e); });
}

/** Every complete line of the file (a torn last line from a killed process is skipped); [] when absent. */
export async function readMetrics(path: string): Promise<MetricsLine[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: MetricsLine[] = [];
  for (const raw of text.split('\n')) {
    if (raw.trim() === '') continue;
    try {
      out.push(JSON.parse(raw) as MetricsLine);
    } catch {
      // A line cut short by a kill; the resume truncation drops it.
    }
  }
  return out;
}

/**
 * Keeps the lines of steps ≤ `step` (atomically: temporary file + rename) and returns them;
 * `step` undefined removes the file (a fresh start). `evalOwed`: the checkpoint at `step` still
 * owes that step's evaluation, so an eval-only line of `step` (logged by a resumed run killed
 * before its next checkpoint) is dropped too: the evaluation runs and is logged again.
 */
export async function truncateMetrics(path: string, step: number | undefined, evalOwed = false): Promise<MetricsLine[]> {
  if (step === undefined) {
    await rm(path, { force: true });
    return [];
  }
  const kept = (await readMetrics(path)).filter((l) => l.step < step || (l.step === step && !(evalOwed && l.loss === undefined)));
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(tmp, kept.map((l) => `${JSON.stringify(l)}\n`).join('')).catch((e: unknown) => { throw ioError(path, 'rewrite the metrics log', e); });
    await rename(tmp, path).catch((e: unknown) => { throw ioError(path, 'rename the rewritten metrics log into place', e); });
  } catch (e) {
    // A failed write leaves the temporary (often zero bytes) behind otherwise.
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  return kept;
}
