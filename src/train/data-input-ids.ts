/**
 * `--input-ids file.safetensors`: pre-tokenized sequences that bypass the tokenizer (e.g. for a
 * model without tokenizer.json, or ids written by `apex generate --ids-out`). The file holds one
 * I32 or I64 tensor of shape [B, T], of any name; I64 values must fit in int32; ids must be ≥ 0.
 * Or, as transformers writes a padded batch (and `apex generate --ids-out` does), `input_ids`
 * with an `attention_mask` of the same shape: 1 for a row's real tokens, then 0 for its padding
 * (right padding only); the padding is then no data (SequenceSet.lengths).
 */
import { InputError } from '../errors.js';
import { SafetensorsFile, type TensorInfo } from '../io/safetensors-reader.js';

export interface InputIdsRows {
  rows: Int32Array[];
  /** Sequence length T of the file. */
  length: number;
  tensorName: string;
  /** Real tokens of each row, from `attention_mask`; absent when the file has none (no padding). */
  lengths?: number[];
}

const INT_DTYPES = ['I32', 'I64'];

export async function readInputIds(path: string): Promise<InputIdsRows> {
  const file = await SafetensorsFile.open(path);
  try {
    const tensors = file.tensors;
    const names = tensors.map((t) => t.name).sort();
    const padded = names.length === 2 && names[0] === 'attention_mask' && names[1] === 'input_ids';
    if (tensors.length !== 1 && !padded) {
      throw new InputError(
        `${path}: --input-ids needs exactly one tensor of token ids [B, T] (or 'input_ids' with an 'attention_mask'), found ${tensors.length}${tensors.length > 0 ? ` (${names.join(', ')})` : ''}`,
        'BAD_INPUT_IDS',
      );
    }
    const info = padded ? tensors.find((t) => t.name === 'input_ids')! : tensors[0]!;
    const [batch, length] = checkShape(path, info, 'token ids');
    const flat = decodeIds(await file.readBytes(info.name), info.dtype as 'I32' | 'I64', `${path}: tensor '${info.name}'`);
    const rows = Array.from({ length: batch }, (_, b) => flat.slice(b * length, (b + 1) * length));
    if (!padded) return { rows, length, tensorName: info.name };
    const maskInfo = tensors.find((t) => t.name === 'attention_mask')!;
    const [mb, mt] = checkShape(path, maskInfo, 'an attention mask');
    if (mb !== batch || mt !== length) {
      throw new InputError(`${path}: 'attention_mask' has shape [${mb}, ${mt}], 'input_ids' [${batch}, ${length}]; they must match`, 'BAD_INPUT_IDS');
    }
    const mask = decodeIds(await file.readBytes(maskInfo.name), maskInfo.dtype as 'I32' | 'I64', `${path}: tensor 'attention_mask'`);
    const lengths = Array.from({ length: batch }, (_, b) => rowLength(mask.subarray(b * length, (b + 1) * length), `${path}: 'attention_mask' row ${b}`));
    return { rows, length, tensorName: info.name, lengths };
  } finally {
    await file.close();
  }
}

function checkShape(path: string, info: TensorInfo, what: string): [number, number] {
  if (!INT_DTYPES.includes(info.dtype)) {
    throw new InputError(`${path}: tensor '${info.name}' has dtype ${info.dtype}; ${what} must be I32 or I64`, 'BAD_INPUT_IDS');
  }
  if (info.shape.length !== 2) {
    throw new InputError(`${path}: tensor '${info.name}' has shape [${info.shape.join(', ')}]; ${what} must have rank 2 [B, T]`, 'BAD_INPUT_IDS');
  }
  const [batch, length] = info.shape as [number, number];
  if (batch === 0 || length === 0) {
    throw new InputError(`${path}: tensor '${info.name}' has shape [${batch}, ${length}]; it holds no tokens`, 'BAD_INPUT_IDS');
  }
  return [batch, length];
}

/** The number of leading ones of a right-padded mask row (ones, then zeros). */
function rowLength(row: Int32Array, where: string): number {
  let n = 0;
  while (n < row.length && row[n] === 1) n++;
  for (let t = n; t < row.length; t++) {
    if (row[t] !== 0) {
      throw new InputError(`${where}: holds ${row[t]} at position ${t} after the padding began at ${n}; the mask must be 1s then 0s (right padding)`, 'BAD_INPUT_IDS');
    }
  }
  if (n === 0) throw new InputError(`${where}: all zeros; a row needs at least one real token`, 'BAD_INPUT_IDS');
  return n;
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
