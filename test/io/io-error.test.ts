// Write failures said as apex's typed errors naming the file (src/io/io-error.ts) and errno
// failures that reach the CLI unwrapped (toApexError). Each errno is injected: no mount, no root.
import { describe, expect, it } from 'vitest';
import { ApexError, ResourceLimitError, toApexError } from '../../src/errors.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { outputState } from '../../src/io/atomic-output.js';
import { ioError } from '../../src/io/io-error.js';

function errno(code: string, message = `${code}: simulated`): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

describe('ioError', () => {
  it('EFBIG is the file-size limit (ulimit -f), exit 5 FILE_TOO_LARGE naming the file, not "disk full"', () => {
    const e = ioError('/out/model.safetensors', 'write', errno('EFBIG')) as ApexError;
    expect(e).toBeInstanceOf(ResourceLimitError);
    expect(e.code).toBe('FILE_TOO_LARGE');
    expect(e.exit).toBe(5);
    expect(e.message).toContain('/out/model.safetensors');
    expect(e.message).toContain('ulimit -f');
    expect(e.message).not.toContain('disk full');
  });

  it('ENOSPC and EDQUOT stay DISK_FULL (exit 5); EROFS, EACCES, EPERM are OUTPUT_NOT_WRITABLE (exit 2)', () => {
    for (const code of ['ENOSPC', 'EDQUOT']) expect(ioError('/out/f', 'write', errno(code))).toMatchObject({ code: 'DISK_FULL', exit: 5 });
    for (const code of ['EROFS', 'EACCES', 'EPERM']) {
      const e = ioError('/out/f', 'write', errno(code)) as ApexError;
      expect(e).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2 });
      expect(e.message).toContain('/out/f');
    }
  });

  it('ENAMETOOLONG is an output apex cannot write (exit 2), with the longest part measured; a real over-long -o folder too', async () => {
    const long = 'x'.repeat(300);
    expect(ioError(`/out/${long}/f`, 'create', errno('ENAMETOOLONG'))).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2, message: expect.stringContaining('its longest part is 300 bytes') });
    // A path over 4096 bytes whose every part is short: the path is measured, not its parts.
    const deep = `/out${`/${'y'.repeat(200)}`.repeat(21)}`;
    expect(ioError(deep, 'create', errno('ENAMETOOLONG'))).toMatchObject({ exit: 2, message: expect.stringContaining(`the whole path is ${deep.length} bytes, Linux allows 4096`) });
    const real = await outputState(join(tmpdir(), long)).catch((e: unknown) => e);
    expect(real).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2, message: expect.stringContaining('ENAMETOOLONG') });
  });
});

describe('toApexError', () => {
  it('an unwrapped EFBIG is exit 5 FILE_TOO_LARGE, not internal', () => {
    const e = toApexError(errno('EFBIG', "EFBIG: file too large, write '/out/x'"));
    expect(e).toMatchObject({ code: 'FILE_TOO_LARGE', exit: 5 });
    expect(e.message).toContain('/out/x');
    expect(e.message).toContain('ulimit -f');
  });
});
