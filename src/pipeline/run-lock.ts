/**
 * The lock an `apex run` holds on its run folder for its whole life (src/io/output-lock.ts), so
 * two processes never work on one run. The trainer takes the same lock for the folder it
 * trains in, which for the run's own stages is the run folder itself: for those stages the
 * run tells it the lock is held (`runLockHeld`), so the folder is never unlocked mid-run.
 */
import { acquireOutputLock, type OutputLock } from '../io/output-lock.js';

export class RunLock {
  private lock: OutputLock | undefined;

  constructor(
    private readonly dir: string,
    private readonly onWarning: (m: string) => void,
  ) {}

  async take(): Promise<void> {
    this.lock = await acquireOutputLock(this.dir, { command: 'apex run', onWarning: this.onWarning });
  }

  async release(): Promise<void> {
    await this.lock?.release();
    this.lock = undefined;
  }
}
