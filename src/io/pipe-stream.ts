/**
 * Reading a pipe (a FIFO, `/dev/stdin` fed by another process) without holding a thread of
 * libuv's pool: an fs read of a pipe whose writer keeps it open without writing blocks a pool
 * thread that nothing can cancel, and process.exit() waits for that thread, so not even a second
 * Ctrl-C could leave. A pipe is opened non-blocking and read on the event loop (a net.Socket),
 * which destroy() ends at once. A reader that opens before any writer still waits for one: Linux
 * reports no hang-up on a pipe that never had a writer.
 */
import { constants, createReadStream, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Socket } from 'node:net';

export type ClosableStream = NodeJS.ReadableStream & { destroy(): void };

/** A readable stream of the pipe at `path`, read on the event loop. */
export async function openPipeStream(path: string): Promise<ClosableStream> {
  const fd = await new Promise<number>((done, fail) => open(path, constants.O_RDONLY | constants.O_NONBLOCK, (e, n) => (e ? fail(e) : done(n))));
  return new Socket({ fd, readable: true, writable: false });
}

/** A pipe through openPipeStream; anything else (a device) as a file stream. */
export async function openPipeOrFileStream(path: string): Promise<ClosableStream> {
  return (await stat(path)).isFIFO() ? openPipeStream(path) : createReadStream(path);
}
