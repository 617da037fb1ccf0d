/**
 * Finds duplicate keys in a JSON text. JSON.parse silently keeps the last of two equal keys,
 * which would hide a tensor declared twice; the safetensors crate rejects such headers.
 */

/** Returns the first duplicated key of any object in `text` (with its object path), or undefined. */
export function findDuplicateKey(text: string): { key: string; path: string } | undefined {
  const stack: { keys: Set<string> | undefined; path: string; expectKey: boolean; lastKey: string }[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
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
          return undefined; // malformed; JSON.parse reports it
        }
        if (top.keys.has(key)) return { key, path: top.path };
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
      i += 1;
      continue;
    }
    if (c === 0x7b /* { */) {
      const parent = stack[stack.length - 1];
      const path = parent ? (parent.keys ? `${parent.path}/${parent.lastKey}` : `${parent.path}/[]`) : '';
      stack.push({ keys: new Set(), path, expectKey: true, lastKey: '' });
    } else if (c === 0x5b /* [ */) {
      const parent = stack[stack.length - 1];
      const path = parent ? (parent.keys ? `${parent.path}/${parent.lastKey}` : `${parent.path}/[]`) : '';
      stack.push({ keys: undefined, path, expectKey: false, lastKey: '' });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top && top.keys) top.expectKey = true;
    }
    i += 1;
  }
  return undefined;
}
