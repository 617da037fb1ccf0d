import { describe, expect, it } from 'vitest';
import { Checkpoint } from '../../src/io/checkpoint.js';

describe('checkpoint smoke', () => {
  it('opens the MHA fixture', async () => {
    const c = await Checkpoint.open('fixtures/llama-mha-f32');
    expect(c.tensors().length).toBe(39);
    await c.close();
  });
});
