import type { Entry, EntryAttribute } from './entries.js';
import { attrKey } from './filter.js';
import { ATTRIBUTE_TYPES, LDAP_SYNTAXES, MATCHING_RULES, OBJECT_CLASSES } from './schema-definitions.js';

/** The DN of the subschema subentry, as slapd names it; every entry's subschemaSubentry. */
export const SUBSCHEMA_DN = 'cn=Subschema';

/**
 * The names of a definition (RFC 4512 4.1): `NAME 'cn'` or
 * `NAME ( 'cn' 'commonName' )`; none for a syntax.
 */
export function definitionNames(description: string): string[] {
  const m = /\bNAME (?:'([^']*)'|\(((?: '[^']*')+) \))/.exec(description);
  if (!m) return [];
  return m[1] !== undefined ? [m[1]] : [...m[2]!.matchAll(/'([^']*)'/g)].map((n) => n[1]!);
}

/** The canonical keys of every attribute type the subschema defines, by first name: what a filter may assert whatever the schema maps. */
export const DEFINED_ATTRIBUTE_TYPES: ReadonlySet<string> = new Set(ATTRIBUTE_TYPES.map((d) => attrKey(definitionNames(d)[0]!)));

/**
 * The subschema subentry: fixed, so built once (its encodings are then
 * kept per selection, as a cached entry's are). Its definitions are
 * operational, as in slapd: a search returns them for `+` or by name, and
 * `objectClass` and `cn` for `*`. Attribute types a custom schema maps that
 * are not among the standard ones have no OID here and are not listed.
 */
export const SUBSCHEMA_ENTRY: Entry = (() => {
  const attrs = new Map<string, EntryAttribute>();
  const add = (name: string, values: readonly string[], operational: boolean): void => void attrs.set(attrKey(name), { name, values, operational });
  add('objectClass', ['top', 'subentry', 'subschema', 'extensibleObject'], false);
  add('cn', ['Subschema'], false);
  add('structuralObjectClass', ['subentry'], true);
  add('entryDN', [SUBSCHEMA_DN], true);
  add('subschemaSubentry', [SUBSCHEMA_DN], true);
  add('ldapSyntaxes', LDAP_SYNTAXES, true);
  add('matchingRules', MATCHING_RULES, true);
  add('attributeTypes', ATTRIBUTE_TYPES, true);
  add('objectClasses', OBJECT_CLASSES, true);
  return { dn: SUBSCHEMA_DN, attrs };
})();
