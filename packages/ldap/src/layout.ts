import type { FieldDef, Schema, TypeDef } from '@meridian/store';
import { STANDARD_ATTRIBUTE_TYPES } from './attribute-types.js';
import { parseDn, type LdapDn } from './dn-text.js';
import { attrKey } from './filter.js';
import { SUBSCHEMA_DN } from './subschema.js';

/** The attribute of every object entry's RDN: the object id, which never changes, so renames never move entries. */
export const ID_ATTR = 'meridianId';

/** A client's string cut to a length fit for an answer or a log line (a DN may be a megabyte long). */
export function shortened(text: string): string {
  return text.length <= 200 ? text : `${text.slice(0, 200)}…`;
}

/** the longest DN locate() remembers; ours are well under 100 characters */
const MAX_CACHED_DN = 256;

/** The attribute listing a person's (or an organisation's) licensed products. */
export const ENTITLEMENT_ATTR = 'meridianEntitlement';

/** The operational attributes every object entry holds (entries.ts), as attribute keys. */
export const ENTRY_OPERATIONAL: readonly string[] = ['entryUUID', 'entryDN', 'createTimestamp', 'modifyTimestamp', 'structuralObjectClass', 'hasSubordinates', 'subschemaSubentry'].map((a) => a.toLowerCase());

/**
 * The auxiliary class every object entry has besides its schema's classes:
 * it holds meridianId and meridianEntitlement, and c and labeledURI, which
 * organization and inetOrgPerson lack (docs/formats/meridian.schema), so an
 * LDIF export of the directory loads into OpenLDAP with schema checks on.
 */
export const OBJECT_CLASS = 'meridianObject';

/** Auxiliary classes of OpenLDAP's usual schemas, which a schema may list after its structural class: not structuralObjectClass. */
const AUXILIARY = new Set(['meridianobject', 'labeleduriobject', 'extensibleobject', 'dcobject', 'uidobject', 'simplesecurityobject', 'pkiuser', 'strongauthenticationuser', 'usersecurityinformation', 'posixaccount', 'shadowaccount']);

export interface MappedType {
  readonly def: TypeDef;
  readonly container: string;
  /** the schema's classes, then OBJECT_CLASS */
  readonly objectClasses: readonly string[];
  /** structuralObjectClass: the schema's last class that is not one of OpenLDAP's usual auxiliary ones (AUXILIARY) */
  readonly structuralClass: string;
  /** the schema's LDAP attribute name per field, and its canonical key */
  readonly fields: ReadonlyMap<string, { name: string; key: string; field: FieldDef }>;
  /** by canonical attribute key: the field it comes from */
  readonly attributes: ReadonlyMap<string, { name: string; field: FieldDef }>;
}

/** Where a DN points. */
export type Location =
  | { kind: 'root' }
  /** cn=Subschema, the subschema subentry (subschema.ts) */
  | { kind: 'subschema' }
  | { kind: 'base' }
  | { kind: 'container'; type: MappedType }
  | { kind: 'entry'; type: MappedType; id: string }
  /** `uid=jdoe,...` or `mail=...`: a login name written as a DN (binds only) */
  | { kind: 'login'; attr: string; value: string }
  | { kind: 'admin' }
  /** not in this directory: the deepest entry of the base that matched, for matchedDN */
  | { kind: 'none'; matched: string };

type Rdn = [key: string, value: string];

function rdnsOf(parsed: LdapDn): Rdn[] {
  const out: Rdn[] = [];
  for (let i = 0; i < parsed.length; i++) {
    const rdn = parsed.rdnAt(i);
    const keys = [...rdn.keys()];
    // multi-valued RDNs (a+b=c) never name our entries
    if (keys.length !== 1) return [['', '']];
    const value = rdn.getValue(keys[0]!);
    out.push([attrKey(keys[0]!), typeof value === 'string' ? value : String(value)]);
  }
  return out;
}

function parse(dn: string): Rdn[] | undefined {
  const parsed = parseDn(dn);
  return parsed && rdnsOf(parsed);
}

export class InvalidDn extends Error {}

/** Whether a parsed DN is cn=Subschema, in any case or spelling of cn. */
function isSubschemaDn(rdns: Rdn[]): boolean {
  return rdns.length === 1 && rdns[0]![0] === 'cn' && rdns[0]![1].toLowerCase() === SUBSCHEMA_DN.slice(3).toLowerCase();
}

/** A base DN parsed (its RDNs, and ldapjs's spelling of it), or why it cannot be one ("...": a phrase after the DN's name). */
function parseBase(dn: string): { rdns: Rdn[]; text: string } | string {
  const parsed = parseDn(dn);
  const rdns = parsed && rdnsOf(parsed);
  if (!rdns || rdns.length === 0 || rdns.some(([k]) => k === '')) return `"${dn}" is not a DN such as dc=example,dc=com`;
  if (isSubschemaDn(rdns)) return `"${dn}" is the subschema subentry's; choose another, such as dc=example,dc=com`;
  return { rdns, text: parsed!.toString() };
}

/** Why `dn` cannot be a directory's base DN, or undefined if it can be. */
export function baseDnProblem(dn: string): string | undefined {
  const base = parseBase(dn);
  return typeof base === 'string' ? base : undefined;
}

/** Whether `dn` is a DN, as ldapjs parses it (which takes "" for the root DSE, and refuses " "), and one it may be given (dnParsable). */
export function isDn(dn: string): boolean {
  return parse(dn) !== undefined;
}

/**
 * The directory tree: the base DN, one `ou` container per mapped type, and
 * one entry per object, `meridianId=<id>,ou=<container>,<base>`. The admin
 * binds as `cn=admin,<base>`.
 */
export class DirectoryLayout {
  readonly base: string;
  private readonly baseRdns: Rdn[];
  readonly types = new Map<string, MappedType>();
  private readonly byContainer = new Map<string, MappedType>();
  /** login fields as attribute keys, from the schema's access rules */
  readonly loginAttrs: ReadonlyMap<string, string>;
  /** every attribute type a filter may assert (canonical keys): the standard ones, Meridian's own and the schema's */
  readonly attributeTypes: ReadonlySet<string>;

  constructor(
    readonly schema: Schema,
    baseDn: string,
  ) {
    const base = parseBase(baseDn);
    if (typeof base === 'string') throw new InvalidDn(`the base DN ${base}`);
    this.baseRdns = base.rdns;
    this.base = base.text;
    for (const def of schema.types.values()) {
      if (!def.ldapObjectClass || !def.ldapContainer || def.system) continue;
      const fields = new Map<string, { name: string; key: string; field: FieldDef }>();
      const attributes = new Map<string, { name: string; field: FieldDef }>();
      for (const f of def.fields.values()) {
        if (!f.ldap) continue;
        fields.set(f.name, { name: f.ldap, key: attrKey(f.ldap), field: f });
        // the first field wins an attribute (Person maps both o and its organisation; there is one o)
        if (!attributes.has(attrKey(f.ldap))) attributes.set(attrKey(f.ldap), { name: f.ldap, field: f });
      }
      const classes = def.ldapObjectClass;
      const objectClasses = classes.some((c) => c.toLowerCase() === OBJECT_CLASS.toLowerCase()) ? classes : [...classes, OBJECT_CLASS];
      const t: MappedType = { def, container: def.ldapContainer, objectClasses, structuralClass: [...classes].reverse().find((c) => !AUXILIARY.has(c.toLowerCase())) ?? classes[classes.length - 1]!, fields, attributes };
      this.types.set(def.name, t);
      this.byContainer.set(def.ldapContainer.toLowerCase(), t);
    }
    const known = new Set([...STANDARD_ATTRIBUTE_TYPES, attrKey(ID_ATTR), attrKey(ENTITLEMENT_ATTR)]);
    for (const t of this.types.values()) for (const key of t.attributes.keys()) known.add(key);
    this.attributeTypes = known;
    const login = new Map<string, string>();
    const access = schema.access;
    const principal = access && this.types.get(access.principalType);
    if (access && principal) {
      for (const field of access.login) {
        const attr = principal.fields.get(field)?.name;
        if (attr) login.set(attrKey(attr), field);
      }
    }
    this.loginAttrs = login;
    this.principal = principal;
  }

  /** the type whose objects sign in (a person), if the schema has access rules */
  readonly principal: MappedType | undefined;

  get adminDn(): string {
    return `cn=admin,${this.base}`;
  }

  containerDn(t: MappedType): string {
    return `ou=${t.container},${this.base}`;
  }

  dnOf(t: MappedType, id: string): string {
    // ids are letters, digits, ".", "_" and "-": nothing to escape
    return `${ID_ATTR}=${id},ou=${t.container},${this.base}`;
  }

  mappedType(name: string): MappedType | undefined {
    return this.types.get(name);
  }

  /**
   * DNs located lately: a client names the same few bases search after
   * search. Only short ones are kept: 4096 DNs of a megabyte each were 4 GB.
   */
  private readonly located = new Map<string, Location>();

  /** Where a DN points; throws InvalidDn when it is not a DN at all. */
  locate(dn: string): Location {
    let loc = this.located.get(dn);
    if (!loc) {
      loc = this.find(dn);
      if (dn.length <= MAX_CACHED_DN) {
        if (this.located.size >= 4096) this.located.clear();
        this.located.set(dn, loc);
      }
    }
    return loc;
  }

  private find(dn: string): Location {
    if (dn.trim() === '') return { kind: 'root' };
    const rdns = parse(dn);
    if (!rdns) throw new InvalidDn(`"${shortened(dn)}" is not a valid DN`);
    // (before logins: a schema whose login attribute is cn must not make it a person's name)
    if (isSubschemaDn(rdns)) return { kind: 'subschema' };
    // a bare uid=... or mail=... names a login wherever it is written
    if (rdns.length === 1 && this.loginAttrs.has(rdns[0]![0])) {
      return { kind: 'login', attr: rdns[0]![0], value: rdns[0]![1] };
    }
    const n = this.baseRdns.length;
    if (!this.underBase(rdns.slice(-n)) || rdns.length < n) return { kind: 'none', matched: '' };
    const rel = rdns.slice(0, rdns.length - n);
    if (rel.length === 0) return { kind: 'base' };
    const [k0, v0] = rel[0]!;
    // uid=...,<base> or uid=...,ou=<the persons' container>,<base>: what a website builds to bind
    // as (under any other parent it names no one, as in slapd)
    const underPersons = rel.length === 2 && rel[1]![0] === 'ou' && this.principal !== undefined && this.byContainer.get(rel[1]![1].toLowerCase()) === this.principal;
    if (this.loginAttrs.has(k0) && (rel.length === 1 || underPersons)) return { kind: 'login', attr: k0, value: v0 };
    if (rel.length === 1 && k0 === 'cn' && v0.toLowerCase() === 'admin') return { kind: 'admin' };
    const last = rel[rel.length - 1]!;
    const type = last[0] === 'ou' ? this.byContainer.get(last[1].toLowerCase()) : undefined;
    if (!type) return { kind: 'none', matched: this.base };
    if (rel.length === 1) return { kind: 'container', type };
    if (rel.length === 2 && k0 === ID_ATTR.toLowerCase()) return { kind: 'entry', type, id: v0 };
    return { kind: 'none', matched: this.containerDn(type) };
  }

  private underBase(tail: Rdn[]): boolean {
    if (tail.length !== this.baseRdns.length) return false;
    return tail.every(([k, v], i) => k === this.baseRdns[i]![0] && v.toLowerCase() === this.baseRdns[i]![1].toLowerCase());
  }

  /** The base entry's own attributes, from its first RDN. */
  baseEntry(): { objectClasses: string[]; attrs: Record<string, string[]> } {
    const [k, v] = this.baseRdns[0]!;
    if (k === 'dc') return { objectClasses: ['top', 'dcObject', 'organization'], attrs: { dc: [v], o: [v] } };
    if (k === 'o') return { objectClasses: ['top', 'organization'], attrs: { o: [v] } };
    if (k === 'ou') return { objectClasses: ['top', 'organizationalUnit'], attrs: { ou: [v] } };
    return { objectClasses: ['top', 'extensibleObject'], attrs: { [k]: [v] } };
  }
}
