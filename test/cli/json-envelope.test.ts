// The --json failure envelope as CI jobs read it: warnings said before the failure are kept
// (they often explain it), and a path the file system refuses is the user's error (exit 3),
// not an internal one.
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { apex, ensureBuilt, LLAMA, ROOT, workspace } from '../reliability/cli.js';

const home = workspace('envelope');
beforeAll(() => ensureBuilt(['eval', 'analyze']));

it('a failure keeps the warnings said before it in the envelope', async () => {
  // The fixture has no chat template (a warning), and 8 tokens leave no assistant token (the failure).
  const r = await apex(['eval', LLAMA, '--data', join(ROOT, 'fixtures/data/chat-sample.jsonl'), '--seq-len', '8', '--backend', 'wasm', '--json'], { home });
  expect(r.status).toBe(3);
  expect(r.json).toMatchObject({ ok: false, error: { code: 'NOT_ENOUGH_DATA', exit: 3 } });
  expect(r.json?.warnings).toEqual([expect.stringMatching(/has no chat template; conversations are rendered in the Tulu format/)]);
});

it('an output path the file system refuses (name too long) exits 2 naming it, as an output apex cannot write, not 1', async () => {
  const long = join(home, 'x'.repeat(300));
  const r = await apex(['analyze', LLAMA, '-o', long, '--samples', '2', '--seq-len', '16', '--backend', 'wasm', '--json'], { home });
  expect(r.status).toBe(2);
  expect(r.json?.error).toMatchObject({ code: 'OUTPUT_NOT_WRITABLE', exit: 2, message: expect.stringContaining(`${long}: cannot write the output there, the name is too long`) });
});
