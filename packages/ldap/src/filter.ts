import { foldText } from '@meridian/store';
import { ATTRIBUTE_TYPES, definitionNames, definitionOid } from './schema-definitions.js';
import { berBool, berText, type BerNode } from './validate.js';
import { parseDn } from './dn-text.js';

/**
 * Search filters as the gateway evaluates them: decoded once from the
 * request's BER into a small typed tree whose attribute names are canonical
 * (lower case, options cut, aliases resolved) and whose values are folded the
 * way the attribute matches. ldapjs's own matching compares names and values
 * case-sensitively, which a directory of people must not do.
 */

export type Filter =
  | { k: 'and'; f: Filter[] }
  | { k: 'or'; f: Filter[] }
  | { k: 'not'; f: Filter }
  | { k: 'eq'; a: string; v: string }
  | { k: 'approx'; a: string; v: string }
  | { k: 'sub'; a: string; initial: string | undefined; any: string[]; final: string | undefined }
  | { k: 'present'; a: string }
  | { k: 'ge'; a: string; v: string }
  | { k: 'le'; a: string; v: string }
  | { k: 'undefined' };

/**
 * Attribute types by their other names (`commonName` for cn, `gn` for
 * givenName, ...), lower case, and by their OIDs (`2.5.4.3` for cn, as
 * RFC 4512 allows in any attribute description): every name of a
 * definition after its first, as cn=Subschema lists them, so that a name
 * it lists works everywhere.
 */
const ALIASES: Readonly<Record<string, string>> = Object.fromEntries(
  ATTRIBUTE_TYPES.flatMap((d) => {
    const [first, ...others] = definitionNames(d).map((n) => n.toLowerCase());
    const oid = definitionOid(d);
    return [...others, ...(oid === undefined ? [] : [oid])].map((alias) => [alias, first!]);
  }),
);

/**
 * The attribute types whose supertype is `name` (RFC 4519): an assertion of
 * `name` is one of any of them, as in OpenLDAP, so `(name=Acme)` finds the
 * organisation whose o is Acme and the person whose cn is.
 */
export const NAME_SUBTYPES: readonly string[] = ATTRIBUTE_TYPES.filter((d) => / SUP name /.test(d)).map((d) => definitionNames(d)[0]!.toLowerCase());

/**
 * Whether an attribute description carries options (`cn;lang-en`,
 * `userCertificate;binary`). The directory holds no tagged values, so such
 * a description names values no entry has: in a filter it is False, in a
 * selection it picks nothing, and a modify of it is refused rather than
 * written to the plain type.
 */
export const hasOptions = (description: string): boolean => description.includes(';');

/**
 * The types an attribute description names in an entry, for filters,
 * selections and compares alike: none for one with options (no entry holds
 * tagged values), `name`'s subtypes for `name`, else its own canonical type.
 */
export function typesNamed(description: string): readonly string[] {
  if (hasOptions(description)) return [];
  const key = attrKey(description);
  return key === 'name' ? NAME_SUBTYPES : [key];
}

/** The canonical key of an attribute description: lower case, options (`;lang-en`) cut, aliases resolved. */
export function attrKey(description: string): string {
  const semi = description.indexOf(';');
  const base = (semi < 0 ? description : description.slice(0, semi)).toLowerCase();
  // (own keys only: a client's "constructor" must not find Object.prototype's)
  return Object.hasOwn(ALIASES, base) ? ALIASES[base]! : base;
}

const PHONE = new Set(['telephonenumber', 'facsimiletelephonenumber', 'mobile', 'homephone', 'pager']);

/**
 * The DN-valued attributes the directory itself gives its entries, matched
 * as DNs (distinguishedNameMatch), as slapd does: `(entryDN=cn = Subschema)`
 * is `cn=subschema`. Only these: a value is parsed per entry a filter on it
 * reads, and these name entries the directory builds; a schema's mapped
 * DN-valued attributes (`manager`) still match as text.
 */
const DN_VALUED: ReadonlySet<string> = new Set(['entrydn', 'subschemasubentry', 'namingcontexts']);

/** A DN in one spelling (no spaces around its separators, escapes as ldapjs writes them), or undefined if it is none. */
function normalDn(v: string): string | undefined {
  return parseDn(v)?.toString().toLowerCase();
}

/**
 * A value as its attribute compares it: case-insensitive with insignificant
 * spaces (caseIgnoreMatch), and for telephone numbers also without spaces
 * and hyphens (telephoneNumberMatch), as OpenLDAP does; in Unicode NFKC
 * with case folded, as the store folds its index keys (foldText), so a
 * decomposed "Müller" and a full-width "ＡＮＮＡ" match too.
 */
export function fold(attr: string, value: string): string {
  const v = foldText(value);
  if (DN_VALUED.has(attr)) {
    const dn = normalDn(v);
    if (dn !== undefined) return dn;
  }
  // (split and join, not replace: V8 returns a replace that cuts a value into many pieces as a rope
  // of them, which it keeps as it is; a filter value of a megabyte of "a a a ..." held 32 MB)
  if (PHONE.has(attr)) return /[\s-]/.test(v) ? v.split(/[\s-]+/).join('') : v;
  return /\s\s|^\s|\s$/.test(v) ? v.trim().split(/\s+/).join(' ') : v;
}

/** A value folded for any attribute, each way once (plain, telephone number, DN): `name` asserts it of eleven types, which fold alike. */
function foldingEach(value: string, made: (folded: string) => void): (attr: string) => string {
  let plain: string | undefined;
  let phone: string | undefined;
  let dn: string | undefined;
  const once = (attr: string): string => {
    const v = fold(attr, value);
    made(v);
    return v;
  };
  return (attr) => (PHONE.has(attr) ? (phone ??= once(attr)) : DN_VALUED.has(attr) ? (dn ??= once(attr)) : (plain ??= once(attr)));
}

export interface FilterOptions {
  /** most nested and/or/not levels */
  depth: number;
  /** most nodes in the whole filter */
  nodes: number;
  /** whether the directory knows an attribute type (canonical key): an assertion of any other is Undefined */
  known(key: string): boolean;
}

export class FilterTooComplex extends Error {
  override name = 'FilterTooComplex';
}

/**
 * Decodes a search request's filter (RFC 4511 section 4.5.1) from its BER,
 * whose shape checkRequest has already checked. Values are the octets the
 * client sent, read as UTF-8: no escapes to undo (those belong to the
 * string form of RFC 4515, which never crosses the wire).
 */
export function decodeFilter(b: Buffer, root: BerNode, limits: FilterOptions): Filter {
  let nodes = 0;
  const count = (n: number): void => {
    nodes += n;
    if (nodes > limits.nodes) throw new FilterTooComplex(`the filter has more than ${limits.nodes} terms; split the search`);
  };
  // Folding may lengthen a value (NFKC makes one three-byte character, U+FDFA, eighteen; a DN-valued
  // attribute's value escapes each byte past ASCII as three): the folded values a search holds until it
  // is answered are kept to four characters a byte of the filter, with room, which every folding but
  // NFKC's of U+FDFA and U+FDFB stays within (a megabyte of U+FDFA folded to 12 MB per search).
  const most = 4 * (root.end - root.start) + 4096;
  let folded = 0;
  const folding = (value: string): ((attr: string) => string) =>
    foldingEach(value, (v) => {
      folded += v.length;
      if (folded > most) throw new FilterTooComplex(`the filter's values grow past ${most} characters once folded (NFKC, case, DN escapes); send shorter values`);
    });
  const UNDEFINED: Filter = { k: 'undefined' };
  /** RFC 4526's absolute false: an or of nothing */
  const FALSE: Filter = { k: 'or', f: [] };
  /**
   * The filter an assertion about the attribute description `d` becomes,
   * given how it is made for one canonical type: Undefined for a type the
   * directory does not know, False for one with options, an or over the
   * subtypes for `name`.
   */
  const about = (d: BerNode | undefined, make: (a: string) => Filter): Filter => {
    const description = berText(b, d);
    if (!limits.known(attrKey(description))) return UNDEFINED;
    // (an or of none, for options, is False)
    const types = typesNamed(description);
    return types.length === 1 ? make(types[0]!) : { k: 'or', f: types.map(make) };
  };
  const assertion = (k: 'eq' | 'ge' | 'le' | 'approx', n: BerNode): Filter => {
    const folded = folding(berText(b, n.children![1]));
    return about(n.children![0], (a) => ({ k, a, v: folded(a) }));
  };
  const walk = (n: BerNode, depth: number): Filter => {
    count(1);
    if (depth > limits.depth) throw new FilterTooComplex(`the filter nests deeper than ${limits.depth} levels; simplify it`);
    const c = n.children ?? [];
    switch (n.tag) {
      case 0xa0:
        return { k: 'and', f: c.map((x) => walk(x, depth + 1)) };
      case 0xa1:
        return { k: 'or', f: c.map((x) => walk(x, depth + 1)) };
      case 0xa2:
        return { k: 'not', f: walk(c[0]!, depth + 1) };
      case 0xa3:
        return assertion('eq', n);
      case 0xa5:
        return assertion('ge', n);
      case 0xa6:
        return assertion('le', n);
      case 0xa8:
        return assertion('approx', n);
      case 0x87:
        return about(n, (a) => ({ k: 'present', a }));
      case 0xa4: {
        // each part is a term: a filter of one substring assertion with 340,000 parts was held whole
        const parts = c[1]!.children!;
        count(parts.length);
        const folded = parts.map((part) => ({ tag: part.tag, fold: folding(berText(b, part)) }));
        return about(c[0], (a) => {
          let initial: string | undefined;
          let final: string | undefined;
          const any: string[] = [];
          for (const part of folded) {
            const v = part.fold(a);
            if (v === '') continue;
            if (part.tag === 0x80) initial = v;
            else if (part.tag === 0x81) any.push(v);
            else final = v;
          }
          return { k: 'sub', a, initial, any, final };
        });
      }
      case 0xa9: {
        // (cn:caseIgnoreMatch:=x) and (cn:=x) are equality; other rules (caseExactMatch too: every value
        // here is matched folded) and dnAttributes are not supported
        const part = (tag: number): BerNode | undefined => c.find((x) => x.tag === tag);
        const rule = berText(b, part(0x81)).toLowerCase();
        const type = part(0x82);
        const dnAttributes = part(0x84);
        const onDns = dnAttributes !== undefined && berBool(b, dnAttributes);
        if (type && type.end > type.start && !onDns && ['', 'caseignorematch', '2.5.13.2'].includes(rule)) {
          const folded = folding(berText(b, part(0x83)));
          return about(type, (a) => ({ k: 'eq', a, v: folded(a) }));
        }
        return UNDEFINED;
      }
      default:
        return UNDEFINED;
    }
  };
  return walk(root, 0);
}

/** Where evaluation reads an entry's folded values; undefined: the entry holds none. */
export interface AttrSource {
  values(attr: string): readonly string[] | undefined;
}

function compare(a: string, b: string): number {
  // numbers compare as numbers; generalized times and dates compare as text
  if (/^-?\d+(\.\d+)?$/.test(a) && /^-?\d+(\.\d+)?$/.test(b)) return Number(a) - Number(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

export function substringMatch(value: string, f: { initial: string | undefined; any: readonly string[]; final: string | undefined }): boolean {
  let at = 0;
  if (f.initial !== undefined) {
    if (!value.startsWith(f.initial)) return false;
    at = f.initial.length;
  }
  for (const part of f.any) {
    const i = value.indexOf(part, at);
    if (i < 0) return false;
    at = i + part.length;
  }
  if (f.final !== undefined) return value.length - at >= f.final.length && value.endsWith(f.final);
  return true;
}

/** RFC 4511's three-valued evaluation: true, false or undefined (which never matches, even under not). */
export function evaluate(f: Filter, e: AttrSource): boolean | undefined {
  switch (f.k) {
    case 'and':
    case 'or': {
      // and stops at the first false, or at the first true; an undefined operand leaves the rest undecided
      const decisive = f.k === 'or';
      let out: boolean | undefined = !decisive;
      for (const x of f.f) {
        const r = evaluate(x, e);
        if (r === decisive) return decisive;
        if (r === undefined) out = undefined;
      }
      return out;
    }
    case 'not': {
      const r = evaluate(f.f, e);
      return r === undefined ? undefined : !r;
    }
    case 'present':
      return (e.values(f.a)?.length ?? 0) > 0;
    case 'undefined':
      return undefined;
    default: {
      // (an attribute type the directory does not know was decoded as 'undefined')
      const values = e.values(f.a) ?? [];
      switch (f.k) {
        case 'eq':
        case 'approx':
          return values.includes(f.v);
        case 'sub':
          return values.some((v) => substringMatch(v, f));
        case 'ge':
          return values.some((v) => compare(v, f.v) >= 0);
        case 'le':
          return values.some((v) => compare(v, f.v) <= 0);
      }
    }
  }
}

/** Every attribute a filter reads. */
export function filterAttributes(f: Filter, out = new Set<string>()): Set<string> {
  if (f.k === 'and' || f.k === 'or') for (const x of f.f) filterAttributes(x, out);
  else if (f.k === 'not') filterAttributes(f.f, out);
  else if (f.k !== 'undefined') out.add(f.a);
  return out;
}
