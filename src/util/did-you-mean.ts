/**
 * "Did you mean …?" suggestions for mistyped config keys and enum values: the closest
 * candidate by Damerau-Levenshtein distance, offered only when it is close enough to be a typo.
 */

/**
 * Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions
 * of adjacent characters each cost 1 (`lr` → `rl` is 1, not 2 as in plain Levenshtein).
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => {
    const row = new Array<number>(cols).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j < cols; j += 1) d[0]![j] = j;
  for (let i = 1; i < rows; i += 1) {
    for (let j = 1; j < cols; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** Canonical spelling for comparison: case, `-` versus `_` and spaces are not typos worth counting. */
function normalise(word: string): string {
  return word.toLowerCase().replace(/[-\s]/g, '_');
}

/**
 * The candidate closest to `word`, or undefined when none is within typo distance
 * (40% of the word's length, rounded up: `cnt` → `count`, but not `foo` → `seed`).
 * Ties go to the earlier candidate.
 */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const target = normalise(word);
  const limit = Math.ceil(target.length * 0.4);
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(target, normalise(candidate));
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= limit ? best : undefined;
}
