// How a failed write is reported: by the file, with the exit code of its cause.
import { expect, it } from 'vitest';
import { ioError } from '../../src/io/safetensors-writer.js';

const errno = (code: string) => Object.assign(new Error(`${code}: failed`), { code });

it('disk full and the file-size limit are resource limits (exit 5) named for what they are', () => {
  expect(ioError('/out/a.safetensors', 'write', errno('ENOSPC'))).toMatchObject({ code: 'DISK_FULL', exit: 5, message: '/out/a.safetensors: disk full during write (ENOSPC); this file was not written' });
  expect(ioError('/out/a.safetensors', 'write', errno('EFBIG'))).toMatchObject({ code: 'FILE_TOO_LARGE', exit: 5, message: expect.stringMatching(/file-size limit .*ulimit -f/) });
  expect(ioError('/out/a.safetensors', 'create', errno('EROFS'))).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
});
