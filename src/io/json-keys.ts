/**
 * Checks on the raw text of a JSON header that JSON.parse cannot make afterwards: it silently
 * keeps the last of two equal keys (hiding a tensor declared twice) and turns `4.0` or `4e0`
 * into the integer 4. The safetensors crate rejects both, so apex scans the text itself.
 */

export interface JsonTextFinding {
  /** Object path of the finding, e.g. `/model.embed_tokens.weight/shape`; '' for the top level. */
  readonly path: string;
  /** The top-level key the finding sits under (the tensor name in a safetensors header). */
  readonly topKey?: string;
}

export interface DuplicateKey extends JsonTextFinding {
  readonly key: string;
}

export interface NonIntegerNumber extends JsonTextFinding {
  /** The number as written, e.g. `-1` or `2.0`. */
  readonly token: string;
}

interface Frame {
  keys: Set<string> | undefined;
  path: string;
  expectKey: boolean;
  lastKey: string;
  topKey: string | undefined;
}

/**
 * Walks a JSON text once, reporting the first duplicated key of any object and the first
 * number that is not a plain non-negative integer (sign, fraction or exponent) at a path
 * `checkNumbersAt` accepts. The text is
 * assumed to have been accepted by JSON.parse already.
 */
export function scanJsonText(
  text: string,
  /** Which object paths' numbers to check (all by default). */
  checkNumbersAt: (path: string) => boolean = () => true,
): { duplicate?: DuplicateKey; nonInteger?: NonIntegerNumber } {
  const stack: Frame[] = [];
  let duplicate: DuplicateKey | undefined;
  let nonInteger: NonIntegerNumber | undefined;
  const childTopKey = (): string | undefined => {
    const parent = stack[stack.length - 1];
    if (!parent) return undefined;
    return stack.length === 1 ? parent.lastKey : parent.topKey;
  };
  const childPath = (): string => {
    const parent = stack[stack.length - 1];
    if (!parent) return '';
    return parent.keys ? `${parent.path}/${parent.lastKey}` : `${parent.path}/[]`;
  };
  let i = 0;
  const n = text.length;
  while (i < n && !(duplicate && nonInteger)) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      i += 1;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i += 2;
        else if (d === 0x22) break;
        else i += 1;
      }
      const top = stack[stack.length - 1];
      if (top && top.keys && top.expectKey) {
        let key: string;
        try {
          key = JSON.parse(text.slice(start, i + 1)) as string;
        } catch {
          return { duplicate, nonInteger }; // malformed; JSON.parse reports it
        }
        if (!duplicate && top.keys.has(key)) duplicate = { key, path: top.path, topKey: top.topKey };
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i += 1;
      continue;
    }
    if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      while (i < n && /[-+0-9.eE]/.test(text[i]!)) i += 1;
      const token = text.slice(start, i);
      if (!nonInteger && !/^[0-9]+$/.test(token)) {
        const path = childPath();
        if (checkNumbersAt(path)) nonInteger = { token, path, topKey: childTopKey() };
      }
      continue;
    }
    if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), path: childPath(), expectKey: true, lastKey: '', topKey: childTopKey() });
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: undefined, path: childPath(), expectKey: false, lastKey: '', topKey: childTopKey() });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top && top.keys) top.expectKey = true;
    }
    i += 1;
  }
  return { duplicate, nonInteger };
}

/** Returns the first duplicated key of any object in `text` (with its object path), or undefined. */
export function findDuplicateKey(text: string): DuplicateKey | undefined {
  return scanJsonText(text).duplicate;
}
