/**
 * A minimal, strict XML parser for the report tests: it rejects anything that is not
 * well-formed (unbalanced or crossed tags, unquoted or duplicate attributes, a raw `<` or `&`
 * outside a valid entity reference, text or a second element outside the root) and returns an
 * element tree with decoded text to query. Skips the XML declaration, DOCTYPE and comments.
 */

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: (XmlElement | string)[];
}

const NAME = /^[A-Za-z_:][\w:.-]*/;

function decodeEntities(raw: string, where: string): string {
  if (raw.includes('<')) throw new Error(`raw '<' in ${where}`);
  return raw.replace(/&([^;&\s]*);?/g, (match, body: string) => {
    if (!match.endsWith(';')) throw new Error(`bare '&' in ${where}: ${JSON.stringify(raw.slice(0, 80))}`);
    const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    if (body in named) return named[body] as string;
    const numeric = /^#(x[0-9a-fA-F]+|[0-9]+)$/.exec(body);
    if (!numeric) throw new Error(`unknown entity &${body}; in ${where}`);
    const code = body[1] === 'x' ? Number.parseInt(body.slice(2), 16) : Number.parseInt(body.slice(1), 10);
    return String.fromCodePoint(code);
  });
}

export function parseXml(text: string): XmlElement {
  let i = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const fail = (why: string): never => {
    throw new Error(`${why} at offset ${i}: ${JSON.stringify(text.slice(i, i + 60))}`);
  };
  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const chunk = text.slice(i, lt === -1 ? text.length : lt);
    if (chunk.length) {
      const decoded = decodeEntities(chunk, 'text');
      const top = stack[stack.length - 1];
      if (top) top.children.push(decoded);
      else if (decoded.trim()) fail('text outside the root element');
    }
    if (lt === -1) break;
    i = lt;
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i);
      if (end === -1) fail('unterminated comment');
      i = end + 3;
      continue;
    }
    if (text.startsWith('<?', i)) {
      const end = text.indexOf('?>', i);
      if (end === -1 || root || stack.length) fail('misplaced processing instruction');
      i = end + 2;
      continue;
    }
    if (text.startsWith('<!DOCTYPE', i)) {
      const end = text.indexOf('>', i);
      if (end === -1 || root || stack.length) fail('misplaced DOCTYPE');
      i = end + 1;
      continue;
    }
    if (text.startsWith('</', i)) {
      const m = /^<\/([A-Za-z_:][\w:.-]*)\s*>/.exec(text.slice(i));
      if (!m) fail('bad closing tag');
      const open = stack.pop();
      if (!open || open.name !== (m as RegExpExecArray)[1]) fail(`closing </${(m as RegExpExecArray)[1]}> does not match <${open?.name}>`);
      i += (m as RegExpExecArray)[0].length;
      continue;
    }
    i += 1;
    const nameMatch = NAME.exec(text.slice(i));
    if (!nameMatch) fail('bad tag name');
    const element: XmlElement = { name: (nameMatch as RegExpExecArray)[0], attrs: {}, children: [] };
    i += element.name.length;
    for (;;) {
      const ws = /^\s*/.exec(text.slice(i))?.[0] ?? '';
      i += ws.length;
      if (text.startsWith('/>', i) || text[i] === '>') break;
      if (!ws.length) fail('attributes must be separated by whitespace');
      const attr = /^([A-Za-z_:][\w:.-]*)\s*=\s*("([^"]*)"|'([^']*)')/.exec(text.slice(i));
      if (!attr) fail('bad attribute');
      const [whole, name, , dq, sq] = attr as RegExpExecArray;
      if ((name as string) in element.attrs) fail(`duplicate attribute ${name}`);
      element.attrs[name as string] = decodeEntities((dq ?? sq) as string, `attribute ${name}`);
      i += whole.length;
    }
    const selfClosing = text.startsWith('/>', i);
    i += selfClosing ? 2 : 1;
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(element);
    else if (root) fail('second root element');
    else root = element;
    if (!selfClosing) stack.push(element);
  }
  if (stack.length) throw new Error(`unclosed <${stack[stack.length - 1]?.name}>`);
  if (!root) throw new Error('no root element');
  return root;
}

/** Every element under (and including) `root` that satisfies `match`, in document order. */
export function findAll(root: XmlElement, match: (e: XmlElement) => boolean): XmlElement[] {
  const out: XmlElement[] = [];
  const visit = (e: XmlElement) => {
    if (match(e)) out.push(e);
    for (const c of e.children) if (typeof c !== 'string') visit(c);
  };
  visit(root);
  return out;
}

export const byClass = (cls: string) => (e: XmlElement) => (e.attrs.class ?? '').split(/\s+/).includes(cls);
export const byName = (name: string) => (e: XmlElement) => e.name === name;

/** Concatenated decoded text of an element and its descendants. */
export function textOf(e: XmlElement): string {
  return e.children.map((c) => (typeof c === 'string' ? c : textOf(c))).join('');
}

/** The `<title>` child's text (an SVG tooltip). */
export function tooltipOf(e: XmlElement): string | undefined {
  const title = e.children.find((c): c is XmlElement => typeof c !== 'string' && c.name === 'title');
  return title ? textOf(title) : undefined;
}
