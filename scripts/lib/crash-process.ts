/**
 * Child processes of the crash harness: `node bin/run.js <args>` started offline with a
 * private HF cache, optionally killed with SIGKILL after a delay counted either from the start
 * or from its first line on stderr (the moment apex begins work, after its imports), so kill
 * points land in the part of the run that writes files.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let bin = join(ROOT, 'bin', 'run.js');

/**
 * Runs apex from another copy of the built tree (bin/, dist/, package.json), e.g. a snapshot
 * taken so that a rebuild of the working tree during a long harness run changes nothing.
 */
export function useApexRoot(root: string): void {
  bin = join(root, 'bin', 'run.js');
}

export interface KillPlan {
  /** `start`: delay from spawn; `work`: delay from the first stderr output. */
  readonly from: 'start' | 'work';
  readonly delayMs: number;
}

export interface ProcessOutcome {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  /** True when SIGKILL was sent before the process exited on its own. */
  readonly killed: boolean;
  /** Milliseconds from spawn to the first stderr output (undefined when there was none). */
  readonly firstOutputMs: number | undefined;
  /** Milliseconds from spawn to exit. */
  readonly wallMs: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ApexRunOptions {
  readonly cwd: string;
  readonly home: string;
  readonly env?: Record<string, string>;
  readonly kill?: KillPlan;
  /** Upper bound for a run that is not killed (SIGKILL after it, reported as killed). */
  readonly timeoutMs?: number;
}

export function runApex(args: readonly string[], o: ApexRunOptions): Promise<ProcessOutcome> {
  return new Promise((done, fail) => {
    const env: NodeJS.ProcessEnv = { ...process.env, CI: '1', HF_HUB_OFFLINE: '1', HF_HOME: o.home, ...o.env };
    delete env.HF_TOKEN;
    const started = performance.now();
    const child = spawn(process.execPath, [bin, ...args], { cwd: o.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let firstOutputMs: number | undefined;
    let killed = false;
    let exited = false;
    const kill = () => {
      if (!exited && !killed) {
        killed = true;
        child.kill('SIGKILL');
      }
    };
    if (o.kill?.from === 'start') setTimeout(kill, o.kill.delayMs);
    const timeout = setTimeout(kill, o.timeoutMs ?? 600_000);
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => {
      if (firstOutputMs === undefined) {
        firstOutputMs = performance.now() - started;
        if (o.kill?.from === 'work') setTimeout(kill, o.kill.delayMs);
      }
      stderr += d.toString();
    });
    child.on('error', fail);
    child.on('exit', () => { exited = true; });
    child.on('close', (status, signal) => {
      clearTimeout(timeout);
      done({ status, signal, killed: killed && signal === 'SIGKILL', firstOutputMs, wallMs: performance.now() - started, stdout, stderr });
    });
  });
}
