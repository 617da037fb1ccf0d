// Which weight files apex fetches from a Hub repo: as transformers' from_pretrained, which asks
// for model.safetensors first and for the index only when there is no single file.
import { describe, expect, it } from 'vitest';
import { weightsLayout } from '../../src/io/hub-files.js';

describe('weightsLayout', () => {
  it('model.safetensors before the index; the index alone; neither refused, naming what the repo has', () => {
    expect(weightsLayout(new Set(['config.json', 'model.safetensors', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors']), 'o/r')).toBe('single');
    expect(weightsLayout(new Set(['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors']), 'o/r')).toBe('index');
    expect(weightsLayout(new Set(['config.json', 'model.safetensors']), 'o/r')).toBe('single');
    expect(() => weightsLayout(new Set(['config.json', 'pytorch_model.bin']), 'o/r')).toThrow(expect.objectContaining({ code: 'NO_WEIGHTS', message: expect.stringContaining('pytorch_model.bin') }));
  });
});
