/**
 * safetensors dtypes: element sizes (in bits, to cover the sub-byte float formats) and which
 * ones apex decodes to float32. Everything else passes through as raw bytes.
 */

export const DTYPE_BITS = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  I64: 64,
  U64: 64,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
} as const;

export type DType = keyof typeof DTYPE_BITS;

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set<DType>(['F16', 'BF16', 'F32', 'F64']);

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BITS, s);
}

/** Size of one element in bytes, rounded up (alignment purposes). */
export function dtypeAlignment(dtype: DType): number {
  return Math.max(1, Math.ceil(DTYPE_BITS[dtype] / 8));
}

/**
 * Byte length of a tensor, or undefined on overflow past Number.MAX_SAFE_INTEGER or when a
 * sub-byte tensor does not fill whole bytes.
 */
export function tensorByteLength(dtype: DType, shape: readonly number[]): number | undefined {
  let numel = 1n;
  for (const d of shape) numel *= BigInt(d);
  const bits = numel * BigInt(DTYPE_BITS[dtype]);
  if (bits % 8n !== 0n) return undefined;
  const bytes = bits / 8n;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return Number(bytes);
}

/** Why a shape has no valid byte length: too large, or a sub-byte tensor that ends mid-byte. */
export function tensorSizeProblem(dtype: DType, shape: readonly number[]): 'overflow' | 'misaligned' | undefined {
  let numel = 1n;
  for (const d of shape) numel *= BigInt(d);
  const bits = numel * BigInt(DTYPE_BITS[dtype]);
  if (bits % 8n !== 0n) return 'misaligned';
  if (bits / 8n > BigInt(Number.MAX_SAFE_INTEGER)) return 'overflow';
  return undefined;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
