/**
 * Counts as people write them: 500000, 500k, 3M, 2.5B (decimal: k = 10³, M = 10⁶, B = 10⁹).
 * `apex finetune --tokens` and the `stages.tokens` key of an `apex run` config read them alike.
 */

/** The JSON Schema pattern of a count written as text. */
export const COUNT_PATTERN = '^\\s*[0-9]+(\\.[0-9]+)?\\s*[kKmMbB]?\\s*$';

/** The count, or undefined when `text` is not one or is not a positive whole number once scaled. */
export function parseCount(text: string): number | undefined {
  // COUNT_PATTERN with the number and the suffix captured.
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMbB]?)\s*$/.exec(text);
  if (!m) return undefined;
  const value = Math.round(Number(m[1]) * ({ '': 1, k: 1e3, m: 1e6, b: 1e9 } as Record<string, number>)[m[2]!.toLowerCase()]!);
  return Number.isSafeInteger(value) && value >= 1 ? value : undefined;
}
