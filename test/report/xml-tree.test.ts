import { describe, expect, it } from 'vitest';
import { byClass, findAll, parseXml, textOf } from './xml-tree.js';

// The SVG/HTML tests lean on this parser rejecting malformed input, so check that it does.
describe('test XML parser', () => {
  it('parses elements, attributes, entities and skips prolog and comments', () => {
    const root = parseXml('<?xml version="1.0"?><!DOCTYPE x><!-- c --><a k="1 &amp; 2"><b class="x y">&lt;&#65;&#x42;</b><c/></a>');
    expect(root.name).toBe('a');
    expect(root.attrs.k).toBe('1 & 2');
    expect(findAll(root, byClass('y')).map(textOf)).toEqual(['<AB']);
  });

  it.each([
    ['unclosed', '<a><b></b>'],
    ['crossed', '<a><b></a></b>'],
    ['raw ampersand', '<a>x & y</a>'],
    ['raw ampersand in attribute', '<a t="x & y"/>'],
    ['raw < in attribute', '<a t="x < y"/>'],
    ['unknown entity', '<a>&nbsp;</a>'],
    ['unquoted attribute', '<a t=1/>'],
    ['duplicate attribute', '<a t="1" t="2"/>'],
    ['two roots', '<a/><b/>'],
    ['text outside root', '<a/>x'],
  ])('rejects %s', (_, xml) => {
    expect(() => parseXml(xml)).toThrow();
  });
});
