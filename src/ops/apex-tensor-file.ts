/**
 * Shared plumbing of apex's own safetensors files (operators, scores): one error type that
 * names the file, tensor and broken rule, and a loader that reads every tensor of a small file
 * into typed arrays (F32 → Float32Array, I32 → Int32Array; other dtypes are refused).
 */
import { InputError } from '../errors.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';
import { describeNonFinite } from '../model/finite-check.js';

/** A structurally valid safetensors file whose apex content breaks a rule (exit 3). */
export class ApexFileFormatError extends InputError {
  readonly file: string;
  readonly tensor: string | undefined;
  readonly rule: string;
  readonly detail: string;
  constructor(file: string, rule: string, detail: string, tensor?: string) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${detail} (rule: ${rule})`, 'APEX_FILE_FORMAT');
    this.file = file;
    this.tensor = tensor;
    this.rule = rule;
    this.detail = detail;
  }
}

export interface LoadedTensor {
  readonly dtype: 'F32' | 'I32';
  readonly shape: readonly number[];
  readonly values: Float32Array | Int32Array;
}

export interface LoadedFile {
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, LoadedTensor>;
}

/** Reads a whole (small) apex safetensors file. */
export async function loadApexTensorFile(path: string): Promise<LoadedFile> {
  const file = await SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, LoadedTensor>();
    for (const t of file.tensors) {
      if (t.dtype !== 'F32' && t.dtype !== 'I32') {
        throw new ApexFileFormatError(path, 'dtype', `dtype ${t.dtype}; apex files hold only F32 and I32 tensors`, t.name);
      }
      const bytes = await file.readBytes(t.name);
      const values = t.dtype === 'F32'
        ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
        : new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      tensors.set(t.name, { dtype: t.dtype, shape: t.shape, values });
    }
    return { metadata: file.metadata, tensors };
  } finally {
    await file.close();
  }
}

/** Layer index from a `model.layers.{i}.…` name, requiring the canonical decimal form. */
export function parseLayerIndex(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) return undefined;
  const i = Number(text);
  return Number.isSafeInteger(i) ? i : undefined;
}

/** Refuses a tensor that holds NaN or Inf (rule `finite`), saying how many values and where the first is. */
export function requireFinite(file: string, tensor: string, v: Float32Array | Int32Array): void {
  const found = describeNonFinite(v);
  if (found !== undefined) throw new ApexFileFormatError(file, 'finite', `holds NaN or Inf: ${found}`, tensor);
}
