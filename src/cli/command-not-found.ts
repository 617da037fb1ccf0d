/**
 * oclif `command_not_found` hook: `apex <unknown>` is a usage error (exit 2) like any other, with
 * the closest command name when it looks like a typo, and with `--json` the same
 * `{ok:false,error}` envelope on stdout that the commands print (base-command.ts), so scripts
 * that parse stdout get a document instead of nothing.
 */
import type { Hook } from '@oclif/core';
import { UsageError } from '../errors.js';
import { editDistance } from '../util/did-you-mean.js';
import { redact } from '../util/secrets.js';
import type { JsonEnvelope } from './base-command.js';

/** Suggestions go at most this many edits away (`evl` → `eval`, not `foo` → `run`). */
const MAX_SUGGESTION_DISTANCE = 2;

/** The command closest to `id` within MAX_SUGGESTION_DISTANCE edits, or undefined; ties go to the first. */
export function closestCommand(id: string, commands: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = MAX_SUGGESTION_DISTANCE + 1;
  for (const c of commands) {
    const d = editDistance(id.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * The error an unknown command id is reported with. oclif joins leading words with ':' into the
 * id (`apex env foo` → `env:foo`), so a known command followed by a word it does not take is a
 * stray argument, not an unknown command.
 */
export function unknownCommandError(id: string, commands: readonly string[]): UsageError {
  if (id.startsWith('-')) return new UsageError(`expected a command before '${id}'; run apex --help for the list`, 'UNKNOWN_COMMAND');
  const words = id.split(':');
  const known = commands.includes(words[0]!) ? words[0]! : undefined;
  if (known !== undefined) {
    return new UsageError(`unexpected argument '${words.slice(1).join(' ')}' for 'apex ${known}'; run apex ${known} --help`, 'UNEXPECTED_ARGUMENT');
  }
  const suggestion = closestCommand(words[0]!, commands);
  return new UsageError(`unknown command '${words[0]}'; run apex --help for the list${suggestion ? ` (did you mean '${suggestion}'?)` : ''}`, 'UNKNOWN_COMMAND');
}

const hook: Hook.CommandNotFound = async function (options) {
  const commands = options.config.commands.filter((c) => !c.hidden).map((c) => c.id).sort();
  const e = unknownCommandError(options.id, commands);
  const message = redact(e.message);
  process.exitCode = e.exit;
  // oclif takes the first word as the id even when it is a flag (`apex --json`).
  // APEX_CONTENT_TYPE=json is oclif's environment form of --json (<BIN>_CONTENT_TYPE), which commands honour too.
  if ([options.id, ...(options.argv ?? [])].includes('--json') || process.env.APEX_CONTENT_TYPE?.toLowerCase() === 'json') {
    const envelope: JsonEnvelope<never> = { ok: false, error: { code: e.code, message, exit: e.exit } };
    process.stdout.write(`${JSON.stringify(envelope, null, 2)}\n`);
  } else {
    process.stderr.write(`apex: error [${e.code}]: ${message}\n`);
  }
};

export default hook;
