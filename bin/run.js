#!/usr/bin/env node
// Loading oclif, the command and TensorFlow.js takes about a second before a command installs its
// SIGINT/SIGTERM handlers (src/cli/base-command.ts); a signal in that time would end the process
// with no answer. It is noted here and handed to the command as soon as it starts (exit 130, the
// --json envelope). oclif is imported after this, not hoisted before it as a static import would be.
const early = { signals: [], listener: (sig) => early.signals.push(sig) };
process.on('SIGINT', early.listener);
process.on('SIGTERM', early.listener);
globalThis.__apexEarlySignals = early;

const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
