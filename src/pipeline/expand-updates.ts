/**
 * `trained.safetensors` (APEX-METHOD §7): F32 copies of the tensors a stage trained directly.
 * `apex expand --updates` puts them in place of the model's tensors before the operators are
 * applied, so a bf16 weight is rounded once, after fusion. Opening checks every entry against
 * the model (name, F32, shape); values are read one tensor at a time when they are needed.
 */
import { InputError } from '../errors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';

export class TrainedUpdates {
  private constructor(readonly path: string, private readonly file: SafetensorsFile) {}

  static async open(path: string, model: Checkpoint): Promise<TrainedUpdates> {
    const file = await SafetensorsFile.open(path);
    try {
      if (file.tensors.length === 0) throw new InputError(`${path}: holds no tensors; there is nothing to update`, 'EMPTY_UPDATES');
      for (const t of file.tensors) {
        if (!model.has(t.name)) throw new InputError(`${path}: trained tensor '${t.name}' is not a tensor of the model in ${model.dir}`, 'UPDATE_MISMATCH');
        const target = model.info(t.name);
        if (t.dtype !== 'F32') throw new InputError(`${path}: trained tensor '${t.name}' is ${t.dtype}; trained copies must be F32`, 'UPDATE_MISMATCH');
        if (JSON.stringify(t.shape) !== JSON.stringify(target.shape)) {
          throw new InputError(`${path}: trained tensor '${t.name}' has shape [${t.shape.join(', ')}] but the model's is [${target.shape.join(', ')}]`, 'UPDATE_MISMATCH');
        }
      }
      return new TrainedUpdates(path, file);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  names(): string[] {
    return this.file.tensors.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.file.has(name);
  }

  /** The trained values (a fresh array the caller may change). */
  async readFloat32(name: string): Promise<Float32Array> {
    return this.file.readFloat32(name);
  }

  /** The trained tensor's F32 bytes into `out` (its exact byte length). */
  async readInto(name: string, out: Uint8Array): Promise<void> {
    await this.file.readInto(name, 0, out);
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
