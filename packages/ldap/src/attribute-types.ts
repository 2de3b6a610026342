import { attrKey } from './filter.js';
import { ATTRIBUTE_TYPES, definitionNames } from './schema-definitions.js';

/**
 * Attribute types a directory of people knows whatever its schema maps:
 * the operational ones (RFC 4512, and those OpenLDAP adds), the user
 * attributes of RFC 4519, and those inetOrgPerson may hold (RFC 2798 and
 * the COSINE ones it borrows): those the subschema subentry defines
 * (schema-definitions.ts). Canonical keys (see filter.ts attrKey).
 *
 * A filter that asserts something of a type outside this set and the
 * schema's mapping is Undefined (RFC 4511 4.5.1.7), as in OpenLDAP, so
 * `(!(noSuchType=x))` matches nothing; a type in the set that an entry does
 * not hold is False, so `(!(jpegPhoto=*))` matches every entry.
 */
export const STANDARD_ATTRIBUTE_TYPES: ReadonlySet<string> = new Set(ATTRIBUTE_TYPES.map((d) => attrKey(definitionNames(d)[0]!)));
