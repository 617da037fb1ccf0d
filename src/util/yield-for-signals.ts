/**
 * Lets the event loop run, then stops if the caller was interrupted. Long synchronous work on
 * cpu/wasm (a forward pass, tokenizing a corpus, a generation loop whose reads resolve as
 * microtasks) never returns to the event loop on its own, so a SIGINT/SIGTERM handler would
 * wait until it ends; calling this between pieces of such work is what makes Ctrl-C prompt.
 */
export async function yieldForSignals(signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>((done) => setImmediate(done));
  signal?.throwIfAborted();
}
