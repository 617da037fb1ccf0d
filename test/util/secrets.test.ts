// Redaction masks tokens and leaves ordinary text, paths included, as written: apex records
// paths in provenance (base_model) and reads them back, so masking part of one breaks runs.
import { describe, expect, it } from 'vitest';
import { redact, redactDeep, registerSecret } from '../../src/util/secrets.js';

describe('redact', () => {
  it('masks unregistered Hugging Face tokens of the Hub form', () => {
    const token = 'hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh'; // hf_ + 34 letters
    expect(redact(`Authorization failed for ${token}.`)).toBe('Authorization failed for hf_***.');
    expect(redact(`https://hub/x?token=${token}`)).not.toContain(token.slice(3));
    expect(redact(`Authorization: Bearer abc.def`)).toBe('Authorization: Bearer ***');
  });

  it('leaves folder names that merely start with hf_ untouched', () => {
    for (const path of [
      '/tmp/hf_downloads/llama-mha-f32',
      '/data/hf_checkpoints/TinyLlama/model.safetensors',
      'C:\\models\\hf_cache_2024\\snapshots',
      '/x/my_hf_exportsForTheTeamAndTheOtherTeams2024',
    ]) {
      expect(redact(path)).toBe(path);
      expect(redactDeep({ base_model: path, args: [path] })).toEqual({ base_model: path, args: [path] });
    }
  });

  it('masks a registered token whatever its shape', () => {
    registerSecret('s3cr3t-mirror-token');
    expect(redact('using s3cr3t-mirror-token now')).toBe('using *** now');
  });
});
