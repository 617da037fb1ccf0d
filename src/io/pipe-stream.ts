/**
 * Reading a pipe (a FIFO, `/dev/stdin` fed by another process) without holding a thread of
 * libuv's pool: an fs read of a pipe whose writer keeps it open without writing blocks a pool
 * thread that nothing can cancel, and process.exit() waits for that thread, so not even a second
 * Ctrl-C could leave. A pipe is opened non-blocking and read on the event loop (a net.Socket),
 * which destroy() ends at once. A reader that opens before any writer still waits for one: Linux
 * reports no hang-up on a pipe that never had a writer.
 */
import { close, constants, createReadStream, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { Socket } from 'node:net';
import { isatty, ReadStream as TtyReadStream } from 'node:tty';

export type ClosableStream = NodeJS.ReadableStream & { destroy(): void };

function openNonBlocking(path: string): Promise<number> {
  return new Promise<number>((done, fail) => open(path, constants.O_RDONLY | constants.O_NONBLOCK, (e, n) => (e ? fail(e) : done(n))));
}

/** A readable stream of the pipe at `path`, read on the event loop. */
export async function openPipeStream(path: string): Promise<ClosableStream> {
  return new Socket({ fd: await openNonBlocking(path), readable: true, writable: false });
}

/**
 * A terminal (`--data /dev/stdin` typed at a prompt, the pipe forgotten) is read on the event
 * loop too: a file stream's blocking read of it held a pool thread until Ctrl-D, so Ctrl-C and
 * SIGTERM wrote their message but the process did not leave. Undefined when `fd` is no terminal.
 */
function terminalStream(fd: number): ClosableStream | undefined {
  if (!isatty(fd)) return undefined;
  return new TtyReadStream(fd);
}

/**
 * Whether the pipe `st` can be read through openPipeStream on `platform`. Not a named pipe on
 * macOS: XNU's kqueue read filter for a FIFO fires only while bytes are buffered, and the last
 * writer's close posts nothing, so libuv (kqueue on macOS) would never see the end of the data and
 * the read would wait for ever (nodejs/node#45210, golang/go#24164). There a named pipe is read by
 * a file stream as before (a silent writer then holds a pool thread). pipe(2) pipes (`/dev/stdin`
 * fed by another process: st_dev 0 on macOS) have their own filter that reports the end.
 */
export function pipeReadsOnEventLoop(st: Pick<Stats, 'dev' | 'isFIFO'>, platform: NodeJS.Platform = process.platform): boolean {
  return st.isFIFO() && (platform !== 'darwin' || st.dev === 0);
}

/** A pipe through openPipeStream (pipeReadsOnEventLoop), a terminal as a tty stream; anything else (a device) as a file stream. */
export async function openPipeOrFileStream(path: string): Promise<ClosableStream> {
  const st = await stat(path);
  if (pipeReadsOnEventLoop(st)) return openPipeStream(path);
  if (st.isCharacterDevice()) {
    const fd = await openNonBlocking(path);
    try {
      const terminal = terminalStream(fd);
      if (terminal) return terminal;
    } catch (e) {
      close(fd, () => {});
      throw e;
    }
    close(fd, () => {});
  }
  return createReadStream(path);
}

/**
 * The bytes of the pipe or device at `path` (openPipeOrFileStream), refused with `tooLarge()` once
 * they pass `limit`: such a file has no size to check before reading. `signal` (Ctrl-C, SIGTERM)
 * stops a wait for a silent writer with its reason rather than after the writer's next write.
 */
export async function readUpTo(path: string, limit: number, tooLarge: () => Error, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  const stream = await openPipeOrFileStream(path);
  const reading = (async () => {
    for await (const chunk of stream) {
      total += (chunk as Buffer).length;
      if (total > limit) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks, total);
  })();
  let onAbort: (() => void) | undefined;
  const stopped = new Promise<never>((_resolve, reject) => {
    if (signal === undefined) return;
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  // Whichever loses the race is settled later with nobody awaiting it.
  reading.catch(() => {});
  stopped.catch(() => {});
  try {
    return await Promise.race([reading, stopped]);
  } finally {
    if (onAbort) signal!.removeEventListener('abort', onAbort);
    stream.destroy();
  }
}
