/**
 * Runs many apex command lines one after another inside ONE Node process (the built CLI through
 * oclif's `run`, as bin/run.js does), so a large matrix of quick failures does not pay the
 * ~0.6 s CPU start-up (oclif + TensorFlow.js imports) once per case. Each case gets its own
 * working folder and environment; stdout and stderr are captured per case and the exit code
 * is read from `process.exitCode` (set by the base command) or from the error oclif throws.
 *
 *     node --import tsx test/reliability/in-process-driver.ts cases.json results.json
 *
 * cases.json: [{ args: string[], cwd: string, env: Record<string, string | null> }]
 * results.json: [{ status, stdout, stderr }] in the same order.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { run } from '@oclif/core';

interface DriverCase {
  args: string[];
  cwd: string;
  env: Record<string, string | null>;
}

const [casesFile, resultsFile] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesFile!, 'utf8')) as DriverCase[];
const root = pathToFileURL(join(process.cwd(), 'bin', 'run.js')).href;
const results: { status: number; stdout: string; stderr: string }[] = [];
const realOut = process.stdout.write.bind(process.stdout);
const realErr = process.stderr.write.bind(process.stderr);
const home = process.cwd();

for (const c of cases) {
  let stdout = '';
  let stderr = '';
  const saved = new Map<string, string | undefined>();
  for (const [k, v] of Object.entries(c.env)) {
    saved.set(k, process.env[k]);
    if (v === null) delete process.env[k];
    else process.env[k] = v;
  }
  process.chdir(c.cwd);
  process.exitCode = 0;
  process.stdout.write = ((chunk: string | Uint8Array) => { stdout += chunk.toString(); return true; }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => { stderr += chunk.toString(); return true; }) as typeof process.stderr.write;
  let status: number;
  try {
    await run(c.args, root);
    status = Number(process.exitCode ?? 0);
  } catch (e) {
    const err = e as Error & { oclif?: { exit?: number } };
    stderr += `${err.message}\n`;
    status = err.oclif?.exit ?? 1;
  } finally {
    process.stdout.write = realOut;
    process.stderr.write = realErr;
    process.chdir(home);
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  results.push({ status, stdout, stderr });
}
process.exitCode = 0;
writeFileSync(resultsFile!, JSON.stringify(results));
