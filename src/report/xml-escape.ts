/**
 * Escaping of untrusted text (model names, paths, labels) for SVG and HTML, in text content
 * and in quoted attribute values alike. Characters XML forbids outright (C0 controls other than
 * tab/newline/carriage return, lone surrogates, U+FFFE/U+FFFF) become U+FFFD, so a strange
 * byte in a model name cannot turn a whole SVG into a parse error.
 */

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

const FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function escapeXml(text: string): string {
  return text.replace(FORBIDDEN, '\uFFFD').replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}
