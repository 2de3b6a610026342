import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { FieldValue, StoredObject, TypeDef } from '@meridian/store';

/**
 * The generic XML form of objects (docs/formats/xml.md, meridian.xsd):
 *
 *   <object type="Person" id="per-1" version="..." modified="...">
 *     <field name="cn">Ada Lovelace</field>
 *     <field name="mail">ada@example.com</field>
 *     <field name="mail">ada@lovelace.org</field>
 *   </object>
 *
 * Names travel in attributes, never as element names, so any schema maps
 * to the same two elements. Values are written exactly as stored: a
 * postcode "0049" stays "0049".
 */

/** A client error in an XML body: the gateway answers `status` with this sentence. */
export class XmlError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const TEXT_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;' };
const ATTR_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\r': '&#13;', '\n': '&#10;', '\t': '&#9;' };

/**
 * Text a client sent, for echoing in an answer: characters XML 1.0 does
 * not allow (C0 controls but tab, newline and CR; U+FFFE, U+FFFF; lone
 * surrogates), which fast-xml-parser lets through in attribute values, as
 * U+FFFD. (Stored values never hold them: the schema refuses them.)
 */
export function xmlSafe(s: string): string {
  return NOT_XML.test(s) ? s.replace(NOT_XML_ALL, '\uFFFD') : s;
}
const NOT_XML = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const NOT_XML_ALL = new RegExp(NOT_XML.source, 'g');

export function escapeText(s: string): string {
  return /[&<>\r]/.test(s) ? s.replace(/[&<>\r]/g, (c) => TEXT_ESC[c]!) : s;
}

export function escapeAttr(s: string): string {
  return /[&<>"\r\n\t]/.test(s) ? s.replace(/[&<>"\r\n\t]/g, (c) => ATTR_ESC[c]!) : s;
}

/** One object as XML: fields in schema order, password fields never. */
export function objectXml(o: StoredObject, def: TypeDef | undefined, indent = ''): string {
  let out = `${indent}<object type="${escapeAttr(o.type)}" id="${escapeAttr(o.id)}" version="${escapeAttr(o.version)}" modified="${o.modified}"${o.deleted ? ' deleted="true"' : ''}>\n`;
  const names = def ? [...def.fields.keys()] : Object.keys(o.fields).sort();
  for (const name of names) {
    if (def?.fields.get(name)?.kind === 'password') continue;
    const v = o.fields[name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out += `${indent}  <field name="${name}">${escapeText(String(one))}</field>\n`;
  }
  return `${out}${indent}</object>\n`;
}

export const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';

/** An object as a client sent it: field values as strings, several for a multi-valued field. */
export interface ObjectInput {
  type: string;
  id: string | undefined;
  version: string | undefined;
  fields: Record<string, string | string[]>;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  processEntities: true,
  // (only numeric references: named ones other than the five of XML are refused before parsing)
  htmlEntities: true,
  isArray: (name) => name === 'field' || name === 'object',
  // callbacks get the path matcher rather than a path string built for every tag, attribute and text (none reads it)
  jPath: false,
});

const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const ENTITY_RE = /&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)/;

/** What holds text no entity reference is read in, and what ends it. */
const LITERALS = [
  ['<!--', '-->'],
  ['<![CDATA[', ']]>'],
  ['<?', '?>'],
] as const;

/**
 * The text with every closed comment, CDATA section and processing
 * instruction blanked (same length, so positions hold), each found from
 * where the one before ended: a "<![CDATA[" inside a comment opens
 * nothing, so it cannot hide an entity reference after the comment. One
 * scan: a lazy regex for sections retried its search for "]]>" from every
 * "<![CDATA[" of a body that never closes one, which took seconds of the
 * event loop for a 1 MiB body.
 */
function blankLiterals(text: string): string {
  const next: number[] = LITERALS.map(([open]) => text.indexOf(open));
  if (next.every((n) => n < 0)) return text;
  const parts: string[] = [];
  let from = 0;
  for (;;) {
    let k = -1;
    for (let j = 0; j < LITERALS.length; j++) {
      if (next[j]! >= 0 && next[j]! < from) next[j] = text.indexOf(LITERALS[j]![0], from);
      if (next[j]! >= 0 && (k < 0 || next[j]! < next[k]!)) k = j;
    }
    if (k < 0) break;
    const [open, close] = LITERALS[k]!;
    const start = next[k]!;
    const end = text.indexOf(close, start + open.length);
    // (nothing after an unclosed one can be closed either; the parser refuses it)
    if (end < 0) break;
    parts.push(text.slice(from, start), ' '.repeat(end + close.length - start));
    from = end + close.length;
  }
  parts.push(text.slice(from));
  return parts.join('');
}

/**
 * Refuses what must never reach the parser: DTDs (and with them every
 * entity declaration, internal or external, so no entity is ever
 * expanded), and references to entities XML does not predefine.
 */
export function screen(text: string, offset = 0): void {
  const doctype = /<!DOCTYPE|<!ENTITY/i.exec(text);
  if (doctype) throw new XmlError(400, `${where(text, doctype.index, offset)}: DOCTYPE and entity declarations are not accepted`);
  // (inside comments, CDATA sections and processing instructions "&" is plain text)
  const outside = blankLiterals(text);
  const entity = ENTITY_RE.exec(outside);
  if (entity) throw new XmlError(400, `${where(text, entity.index, offset)}: "&" must start one of &amp; &lt; &gt; &quot; &apos; or a character reference`);
  // a reference to a character XML does not allow (NUL, most controls) is malformed, not silently dropped
  for (const m of outside.matchAll(CHAR_REF_RE)) {
    const code = m[1] !== undefined ? parseInt(m[1], 10) : parseInt(m[2]!, 16);
    if (!isXmlChar(code)) throw new XmlError(400, `${where(text, m.index, offset)}: ${m[0]} is not a character XML allows`);
  }
}

const CHAR_REF_RE = /&#(?:([0-9]{1,7})|x([0-9A-Fa-f]{1,6}));/g;

function isXmlChar(c: number): boolean {
  return c === 0x9 || c === 0xa || c === 0xd || (c >= 0x20 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) || (c >= 0x10000 && c <= 0x10ffff);
}

function where(text: string, index: number, lineOffset: number): string {
  const before = text.slice(0, index);
  const line = before.split('\n').length + lineOffset;
  const col = index - before.lastIndexOf('\n');
  return `malformed XML at line ${line}, column ${col}`;
}

/**
 * Parses a document whose root is `root` (`object` or `objects`) into the
 * objects it holds. `lineOffset` is added to reported line numbers (for a
 * piece of a streamed document).
 */
export function parseDocument(text: string, root: 'object' | 'objects', lineOffset = 0): ObjectInput[] {
  screen(text, lineOffset);
  const valid = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (valid !== true) {
    // (the validator's own message names the line a tag was opened on, counted within this piece too)
    const msg = valid.err.msg.replace(/\(opened in line (\d+),/, (_m, n: string) => `(opened in line ${Number(n) + lineOffset},`);
    // (the validator names no column for an empty document)
    if (text.trim() === '' && lineOffset === 0) throw new XmlError(400, `the body is empty; send an XML document whose root is <${root}>`);
    const col = typeof valid.err.col === 'number' ? `, column ${valid.err.col}` : '';
    throw new XmlError(400, `malformed XML at line ${valid.err.line + lineOffset}${col}: ${msg}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new XmlError(400, `malformed XML: ${(e as Error).message}`);
  }
  const roots = Object.keys(doc).filter((k) => k !== '#text');
  if (typeof doc['#text'] === 'string' && doc['#text'].trim() !== '') throw new XmlError(400, 'text outside the root element');
  if (roots.length !== 1 || roots[0] !== root) {
    throw new XmlError(400, `the document must have one root element <${root}>, got ${roots.length ? roots.map((r) => `<${r}>`).join(', ') : 'none'}`);
  }
  if (root === 'object') {
    const list = doc['object'] as unknown[];
    if (list.length !== 1) throw new XmlError(400, `the document must have one root element <object>, got ${list.length}`);
    return [objectInput(list[0])];
  }
  const body = doc['objects'];
  if (typeof body === 'string') {
    if (body.trim() !== '') throw new XmlError(400, '<objects> holds <object> elements, not text');
    return [];
  }
  if (!isRecord(body)) throw new XmlError(400, '<objects> holds <object> elements');
  for (const k of Object.keys(body)) {
    if (k === 'object' || k.startsWith('@')) continue;
    if (k === '#text' && typeof body[k] === 'string' && (body[k] as string).trim() === '') continue;
    throw new XmlError(400, k === '#text' ? '<objects> holds <object> elements, not text' : `unexpected element <${k}> in <objects>; only <object> is allowed`);
  }
  return ((body['object'] as unknown[] | undefined) ?? []).map((o) => objectInput(o));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const OBJECT_ATTRS = new Set(['@type', '@id', '@version', '@modified', '@deleted']);

function objectInput(raw: unknown): ObjectInput {
  if (!isRecord(raw)) {
    if (typeof raw === 'string' && raw.trim() !== '') throw new XmlError(400, '<object> holds <field> elements, not text');
    throw new XmlError(400, 'an <object> needs a type attribute');
  }
  for (const k of Object.keys(raw)) {
    if (k.startsWith('@')) {
      if (!OBJECT_ATTRS.has(k)) throw new XmlError(400, `unknown attribute ${k.slice(1)} on <object>; it takes type, id and version`);
    } else if (k === '#text') {
      if (typeof raw[k] !== 'string' || (raw[k] as string).trim() !== '') throw new XmlError(400, '<object> holds <field> elements, not text');
    } else if (k !== 'field') throw new XmlError(400, `unexpected element <${k}> in <object>; only <field> is allowed`);
  }
  const type = raw['@type'];
  if (typeof type !== 'string' || !NAME_RE.test(type)) throw new XmlError(400, 'an <object> needs a type attribute naming a type of the schema');
  const id = raw['@id'];
  const version = raw['@version'];
  if (raw['@deleted'] !== undefined) throw new XmlError(400, 'deleted="true" is not accepted in a document sent to the node; delete with DELETE');
  const fields: Record<string, string | string[]> = {};
  for (const f of (raw['field'] as unknown[] | undefined) ?? []) {
    let name: unknown;
    let value: unknown = '';
    if (isRecord(f)) {
      for (const k of Object.keys(f)) {
        if (k !== '@name' && k !== '#text') throw new XmlError(400, k.startsWith('@') ? `unknown attribute ${k.slice(1)} on <field>; it takes name` : `unexpected element <${k}> in <field>; a field holds text`);
      }
      name = f['@name'];
      value = f['#text'] ?? '';
    } else name = undefined;
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new XmlError(400, 'every <field> needs a name attribute of letters, digits and _');
    if (typeof value !== 'string') throw new XmlError(400, `field "${name}" holds text only`);
    // (own keys only: a field named "constructor" found Object.prototype's, and the list made of it could not
    // even be posted back from the parser thread, which died of it)
    // (pushed, never copied: a copy per repeat made 39,000 repeats of one name, a 1 MiB body any signed-in
    // person may send to PUT /me, hold the event loop for 12 s)
    const prev = Object.hasOwn(fields, name) ? fields[name] : undefined;
    if (prev === undefined) fields[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else fields[name] = [prev, value];
  }
  return {
    type,
    id: typeof id === 'string' ? id : undefined,
    version: typeof version === 'string' ? version : undefined,
    fields,
  };
}

/** Field values for the write path: one value as a string, several as a list (multi-valued fields always a list). */
export function writeFields(def: TypeDef, input: ObjectInput): Record<string, FieldValue | null> {
  const out: Record<string, FieldValue | null> = {};
  for (const [name, v] of Object.entries(input.fields)) {
    const f = def.fields.get(name);
    out[name] = f?.multi && !Array.isArray(v) ? [v] : v;
  }
  return out;
}
