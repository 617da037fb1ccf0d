/**
 * `--input-ids file.safetensors`: pre-tokenized sequences that bypass the tokenizer (e.g. for a
 * model without tokenizer.json, or ids written by `apex generate --ids-out`). The file holds one
 * I32 or I64 tensor of shape [B, T], of any name; I64 values must fit in int32; ids must be ≥ 0.
 */
import { InputError } from '../errors.js';
import { SafetensorsFile } from '../io/safetensors-reader.js';

export interface InputIdsRows {
  rows: Int32Array[];
  /** Sequence length T of the file. */
  length: number;
  tensorName: string;
}

export async function readInputIds(path: string): Promise<InputIdsRows> {
  const file = await SafetensorsFile.open(path);
  try {
    const tensors = file.tensors;
    if (tensors.length !== 1) {
      throw new InputError(
        `${path}: --input-ids needs exactly one tensor of token ids [B, T], found ${tensors.length}${tensors.length > 0 ? ` (${tensors.map((t) => t.name).join(', ')})` : ''}`,
        'BAD_INPUT_IDS',
      );
    }
    const info = tensors[0]!;
    if (info.dtype !== 'I32' && info.dtype !== 'I64') {
      throw new InputError(`${path}: tensor '${info.name}' has dtype ${info.dtype}; token ids must be I32 or I64`, 'BAD_INPUT_IDS');
    }
    if (info.shape.length !== 2) {
      throw new InputError(`${path}: tensor '${info.name}' has shape [${info.shape.join(', ')}]; token ids must have rank 2 [B, T]`, 'BAD_INPUT_IDS');
    }
    const [batch, length] = info.shape as [number, number];
    if (batch === 0 || length === 0) {
      throw new InputError(`${path}: tensor '${info.name}' has shape [${batch}, ${length}]; it holds no tokens`, 'BAD_INPUT_IDS');
    }
    const bytes = await file.readBytes(info.name);
    const flat = decodeIds(bytes, info.dtype, `${path}: tensor '${info.name}'`);
    const rows = Array.from({ length: batch }, (_, b) => flat.slice(b * length, (b + 1) * length));
    return { rows, length, tensorName: info.name };
  } finally {
    await file.close();
  }
}

function decodeIds(bytes: Uint8Array, dtype: 'I32' | 'I64', where: string): Int32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = dtype === 'I32' ? 4 : 8;
  const out = new Int32Array(bytes.byteLength / width);
  for (let i = 0; i < out.length; i++) {
    let value: number;
    if (dtype === 'I32') {
      value = view.getInt32(i * 4, true);
    } else {
      const big = view.getBigInt64(i * 8, true);
      if (big > 2147483647n || big < -2147483648n) {
        throw new InputError(`${where}: value ${big} at flat index ${i} does not fit in int32`, 'BAD_INPUT_IDS');
      }
      value = Number(big);
    }
    if (value < 0) throw new InputError(`${where}: negative token id ${value} at flat index ${i}`, 'BAD_INPUT_IDS');
    out[i] = value;
  }
  return out;
}
