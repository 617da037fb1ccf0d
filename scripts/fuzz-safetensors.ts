/**
 * Seeded mutation fuzzing of the safetensors reader and the shard-index reader
 * (engine: scripts/lib/safetensors-fuzz.ts).
 *
 *   npx tsx scripts/fuzz-safetensors.ts [--cases 10000] [--seed 1] [--bound-ms 2000]
 *
 * The cases run in a child process that reports each case before starting it; a watchdog
 * here kills the child when one case runs past the hang bound (a synchronous infinite loop
 * cannot be timed out from inside), records that case as a hang and resumes after it. Prints
 * a JSON summary; exits 1 when there is any finding.
 */
import { fork } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type CaseOutcome, type FuzzSummary, prepareShardedTarget, runFuzz, type Seed, syntheticSeeds } from './lib/safetensors-fuzz.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '1' },
    'bound-ms': { type: 'string', default: '2000' },
    'hang-ms': { type: 'string', default: '20000' },
    child: { type: 'string' },
  },
});

async function seeds(): Promise<Seed[]> {
  const files = ['fixtures/stories260K/model.safetensors', 'fixtures/refs/stories260K/reference_outputs.safetensors', 'fixtures/refs/llama-mha-f32/reference_outputs.safetensors'];
  return [...syntheticSeeds(), ...(await Promise.all(files.map(async (f) => ({ name: f, bytes: new Uint8Array(await readFile(f)) }))))];
}

/** Child: runs cases [first, first + count) and reports over IPC. */
async function child(first: number, count: number): Promise<void> {
  const workDir = join(tmpdir(), `apex-fuzz-${process.pid}`);
  const target = await prepareShardedTarget(workDir);
  const summary = await runFuzz({
    seed: Number(values.seed),
    cases: count,
    firstCase: first,
    seeds: await seeds(),
    workDir,
    ...target,
    diskEvery: 10,
    indexEvery: 10,
    caseTimeBoundMs: Number(values['bound-ms']),
    onCaseStart: (id) => process.send!({ start: id }),
  });
  await rm(workDir, { recursive: true, force: true });
  process.send!({ done: summary });
}

function runChild(first: number, count: number): Promise<{ summary?: FuzzSummary; failedAt?: number; reason?: string }> {
  return new Promise((done) => {
    let settled = false;
    const resolve = (v: { summary?: FuzzSummary; failedAt?: number; reason?: string }) => { if (!settled) { settled = true; done(v); } };
    const c = fork(fileURLToPath(import.meta.url), ['--child', `${first}:${count}`, '--seed', values.seed!, '--bound-ms', values['bound-ms']!], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    let current = first;
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => { resolve({ failedAt: current, reason: `hang: no progress for ${values['hang-ms']} ms` }); c.kill('SIGKILL'); }, Number(values['hang-ms']));
    };
    arm();
    c.stderr!.on('data', (d) => { stderr += String(d); });
    c.on('message', (m: { start?: number; done?: FuzzSummary }) => {
      if (m.start !== undefined) { current = m.start; arm(); }
      if (m.done) { clearTimeout(timer); resolve({ summary: m.done }); }
    });
    c.on('exit', (code) => { clearTimeout(timer); resolve({ failedAt: current, reason: `crash: child exited ${code}: ${stderr.slice(-2000)}` }); });
  });
}

async function parent(): Promise<void> {
  const total = Number(values.cases);
  const t0 = Date.now();
  const findings: CaseOutcome[] = [];
  const merged = { valid: 0, rejected: 0, diskCases: 0, indexCases: 0, maxCaseMs: 0, maxArrayBufferGrowthBytes: 0, byRule: {} as Record<string, number>, byOp: {} as Record<string, number> };
  let next = 0;
  while (next < total) {
    process.stderr.write(`running cases ${next}..${total - 1}\n`);
    const r = await runChild(next, total - next);
    if (r.summary) {
      const s = r.summary;
      findings.push(...s.findings);
      merged.valid += s.valid;
      merged.rejected += s.rejected;
      merged.diskCases += s.diskCases;
      merged.indexCases += s.indexCases;
      merged.maxCaseMs = Math.max(merged.maxCaseMs, s.maxCaseMs);
      merged.maxArrayBufferGrowthBytes = Math.max(merged.maxArrayBufferGrowthBytes, s.maxArrayBufferGrowthBytes);
      for (const [k, v] of Object.entries(s.byRule)) merged.byRule[k] = (merged.byRule[k] ?? 0) + v;
      for (const [k, v] of Object.entries(s.byOp)) merged.byOp[k] = (merged.byOp[k] ?? 0) + v;
      break;
    }
    const at = r.failedAt!;
    findings.push({ id: at, op: '?', outcome: 'finding', detail: r.reason!, ms: 0 });
    process.stderr.write(`case ${at}: ${r.reason}\n`);
    next = at + 1; // counts of the cases before a crash are lost; the findings are what matter
  }
  const report = {
    seed: Number(values.seed),
    cases: total,
    seconds: (Date.now() - t0) / 1000,
    ...merged,
    byRule: Object.fromEntries(Object.entries(merged.byRule).sort((a, b) => b[1] - a[1])),
    findings,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.exitCode = findings.length ? 1 : 0;
}

if (values.child) {
  const [first, count] = values.child.split(':').map(Number);
  await child(first!, count!);
} else {
  await parent();
}
