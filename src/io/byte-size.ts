/**
 * Byte sizes as people write them on the command line: decimal units (`5GB` = 5·10⁹, as the
 * Hugging Face `max_shard_size` means them) and binary ones (`8GiB` = 8·2³⁰), plus formatting.
 */
import { UsageError } from '../errors.js';

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * Parses `500MB`, `5GB`, `1.5GB`, `8GiB`, `1024` (bytes) into a whole number of bytes.
 * `what` names the flag or key in the error message.
 */
export function parseByteSize(text: string, what = 'size'): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`${what}: '${text}' is not a size; write a number with a unit such as 500MB, 5GB or 8GiB`, 'BAD_SIZE');
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`${what}: '${text}' must be a positive size below 8 PiB`, 'BAD_SIZE');
  }
  return bytes;
}

/** Formats bytes with decimal units, e.g. `2.20 GB`, `512 B`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let i = -1;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i += 1;
  }
  return `${value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[i]}`;
}
