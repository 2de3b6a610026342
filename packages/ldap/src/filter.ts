/**
 * Search filters as the gateway evaluates them: converted once from ldapjs's
 * parsed filter into a small typed tree whose attribute names are canonical
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

/** Attribute types with their usual other names (RFC 4519), by the lower-case alias. */
const ALIASES: Record<string, string> = {
  commonname: 'cn',
  surname: 'sn',
  gn: 'givenname',
  rfc822mailbox: 'mail',
  userid: 'uid',
  organizationname: 'o',
  organizationalunitname: 'ou',
  localityname: 'l',
  stateorprovincename: 'st',
  streetaddress: 'street',
  countryname: 'c',
  mobiletelephonenumber: 'mobile',
  fax: 'facsimiletelephonenumber',
};

/** The canonical key of an attribute description: lower case, options (`;lang-en`) cut, aliases resolved. */
export function attrKey(description: string): string {
  const semi = description.indexOf(';');
  const base = (semi < 0 ? description : description.slice(0, semi)).toLowerCase();
  return ALIASES[base] ?? base;
}

const PHONE = new Set(['telephonenumber', 'facsimiletelephonenumber', 'mobile', 'homephone', 'pager']);

/**
 * A value as its attribute compares it: case-insensitive with insignificant
 * spaces (caseIgnoreMatch), and for telephone numbers also without spaces
 * and hyphens (telephoneNumberMatch), as OpenLDAP does; in Unicode NFC, as
 * the store folds its index keys, so a decomposed "Müller" matches too.
 */
export function fold(attr: string, value: string): string {
  const v = value.normalize('NFC').toLowerCase();
  if (PHONE.has(attr)) return v.replace(/[\s-]+/g, '');
  return /\s\s|^\s|\s$/.test(v) ? v.trim().replace(/\s+/g, ' ') : v;
}

export interface FilterLimits {
  /** most nested and/or/not levels */
  depth: number;
  /** most nodes in the whole filter */
  nodes: number;
}

export class FilterTooComplex extends Error {
  override name = 'FilterTooComplex';
}

/** The parts of ldapjs's filter objects the conversion reads. */
interface LdapjsFilter {
  type: string;
  attribute?: string;
  value?: unknown;
  filters?: LdapjsFilter[];
  filter?: LdapjsFilter;
  subInitial?: string;
  subAny?: string[];
  subFinal?: string;
  initial?: string;
  any?: string[];
  final?: string;
  matchingRule?: string;
  dnAttributes?: boolean;
}

/**
 * A filter value as the client sent it. ldapjs 3.0.7 turns a parsed filter
 * into its string form and parses that again, so values arrive with RFC
 * 4515 escapes (`M\\c3\\bcller` for Müller, `\\2a` for a literal *): undo
 * them, byte by byte, then read the bytes as UTF-8.
 */
export function unescapeValue(v: string): string {
  if (!v.includes('\\')) return v;
  const bytes: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const hex = v[i] === '\\' ? v.slice(i + 1, i + 3) : '';
    if (/^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(v[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function text(v: unknown): string {
  if (typeof v === 'string') return unescapeValue(v);
  if (Buffer.isBuffer(v)) return unescapeValue(v.toString('utf8'));
  return unescapeValue(String(v ?? ''));
}

export function convertFilter(input: unknown, limits: FilterLimits): Filter {
  let nodes = 0;
  const walk = (f: LdapjsFilter, depth: number): Filter => {
    if (++nodes > limits.nodes) throw new FilterTooComplex(`the filter has more than ${limits.nodes} terms; split the search`);
    if (depth > limits.depth) throw new FilterTooComplex(`the filter nests deeper than ${limits.depth} levels; simplify it`);
    const a = f.attribute !== undefined ? attrKey(f.attribute) : '';
    switch (f.type) {
      case 'AndFilter':
        return { k: 'and', f: (f.filters ?? []).map((x) => walk(x, depth + 1)) };
      case 'OrFilter':
        return { k: 'or', f: (f.filters ?? []).map((x) => walk(x, depth + 1)) };
      case 'NotFilter':
        return { k: 'not', f: walk(f.filter!, depth + 1) };
      case 'EqualityFilter':
        return { k: 'eq', a, v: fold(a, text(f.value)) };
      case 'ApproximateFilter':
        return { k: 'approx', a, v: fold(a, text(f.value)) };
      case 'GreaterThanEqualsFilter':
        return { k: 'ge', a, v: fold(a, text(f.value)) };
      case 'LessThanEqualsFilter':
        return { k: 'le', a, v: fold(a, text(f.value)) };
      case 'PresenceFilter':
        return { k: 'present', a };
      case 'SubstringFilter': {
        const initial = f.subInitial ?? f.initial;
        const final = f.subFinal ?? f.final;
        return {
          k: 'sub',
          a,
          initial: initial ? fold(a, text(initial)) : undefined,
          any: (f.subAny ?? f.any ?? []).filter((s) => s !== '').map((s) => fold(a, text(s))),
          final: final ? fold(a, text(final)) : undefined,
        };
      }
      case 'ExtensibleFilter': {
        // (cn:caseIgnoreMatch:=x) and (cn:=x) are equality; other rules and dnAttributes are not supported
        const rule = (f.matchingRule ?? '').toLowerCase();
        if (f.attribute && !f.dnAttributes && ['', 'caseignorematch', '2.5.13.2', 'caseexactmatch', '2.5.13.5'].includes(rule)) {
          return { k: 'eq', a, v: fold(a, text(f.value)) };
        }
        return { k: 'undefined' };
      }
      default:
        return { k: 'undefined' };
    }
  };
  return walk(input as LdapjsFilter, 0);
}

/** Where evaluation reads an entry's folded values; undefined: no such attribute type here. */
export interface AttrSource {
  values(attr: string): readonly string[] | undefined;
  /** whether the attribute type exists for this entry (a missing value is then false, not undefined) */
  knows(attr: string): boolean;
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
      if (!e.knows(f.a)) return undefined;
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
