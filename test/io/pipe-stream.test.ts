// Which pipes are read on the event loop (net.Socket): on macOS not a named pipe, whose end
// kqueue never reports (the read would wait for ever after the writer closed).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openPipeOrFileStream, pipeReadsOnEventLoop } from '../../src/io/pipe-stream.js';

const dir = mkdtempSync(join(tmpdir(), 'apex-pipe-stream-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fifo = (dev: number) => ({ dev, isFIFO: () => true });

it('a named pipe is read on the event loop on Linux, by a file stream on macOS; pipe(2) pipes on the event loop on both', () => {
  expect(pipeReadsOnEventLoop(fifo(64769), 'linux')).toBe(true);
  expect(pipeReadsOnEventLoop(fifo(16777232), 'darwin')).toBe(false);
  expect(pipeReadsOnEventLoop(fifo(0), 'darwin')).toBe(true);
  expect(pipeReadsOnEventLoop({ dev: 0, isFIFO: () => false }, 'linux')).toBe(false);
});

it.skipIf(process.platform === 'win32')('reads a named pipe to its end once the writer closes', async () => {
  const path = join(dir, 'fifo');
  execFileSync('mkfifo', [path]);
  expect(statSync(path).isFIFO()).toBe(true);
  const stream = await openPipeOrFileStream(path);
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of stream) chunks.push(c as Buffer);
  })();
  writeFileSync(path, 'first\n');
  await Promise.race([done, new Promise((_, fail) => setTimeout(() => fail(new Error('no end of data within 5 s')), 5000))]);
  stream.destroy();
  expect(Buffer.concat(chunks).toString()).toBe('first\n');
});
