import type { Entry, EntryAttribute } from './entries.js';
import { attrKey, fold, type AttrSource } from './filter.js';
import { ATTRIBUTE_TYPES, definitionNames, definitionOid, LDAP_SYNTAXES, MATCHING_RULES, OBJECT_CLASSES } from './schema-definitions.js';

/** The DN of the subschema subentry, as slapd names it; every entry's subschemaSubentry. */
export const SUBSCHEMA_DN = 'cn=Subschema';

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

/** The definition attributes, whose values match by their first component (objectIdentifierFirstComponentMatch, RFC 4517). */
const BY_FIRST_COMPONENT = ['attributeTypes', 'objectClasses', 'matchingRules', 'ldapSyntaxes'].map((a) => attrKey(a));

/**
 * The subschema entry's values as filters and compares match them: a
 * definition by its OID or one of its names, as in slapd
 * (`(attributeTypes=2.5.4.3)`, `ldapcompare cn=Subschema
 * objectClasses:inetOrgPerson`), not by its whole text; other attributes
 * folded as any entry's are.
 */
export const SUBSCHEMA_SOURCE: AttrSource = (() => {
  const folded = new Map<string, readonly string[]>();
  for (const [key, a] of SUBSCHEMA_ENTRY.attrs) {
    const components = BY_FIRST_COMPONENT.includes(key) ? a.values.flatMap((d) => [definitionOid(d)!, ...definitionNames(d)]) : a.values;
    folded.set(key, components.map((v) => fold(key, v)));
  }
  return { values: (attr) => folded.get(attr) };
})();
