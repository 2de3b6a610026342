import ldap from 'ldapjs';

const { DN } = ldap;

/** More RDNs than any DN of ours has: a megabyte of them took ldapjs 0.6 s. */
export const MAX_RDNS = 512;

/** More plus signs than any DN of ours holds, even escaped in values. */
const MAX_PLUS_SIGNS = 16;

/**
 * Whether ldapjs's DN parser (@ldapjs/dn 1.1) may be given a client's
 * string. It loops for ever, blocking the whole process, on a value in the
 * #hex form that a space follows ("cn=#41 ", reachable by an anonymous bind
 * name), and takes time cubic in the names of a multi-valued RDN (8,000 of
 * them, 63 KB: 10 s). This directory names no entry with a #hex value or a
 * multi-valued RDN, so a string with an '=' and then a '#' (spaces between
 * them allowed), or with more than a few '+', is refused as no DN before
 * ldapjs sees it, as is one of more RDNs than any DN here has. The tests
 * count characters, escaped or not, so they are wider than the forms they
 * guard against: they also refuse cn=a=#b, which no entry here has either.
 */
export function dnParsable(text: string): boolean {
  if (/=[ ]*#/.test(text)) return false;
  let plus = 0;
  let separators = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2b && ++plus > MAX_PLUS_SIGNS) return false;
    if ((c === 0x2c || c === 0x3b) && ++separators >= MAX_RDNS) return false;
  }
  return true;
}

/** A DN as ldapjs parses it. */
export type LdapDn = InstanceType<typeof DN>;

/** A client's DN parsed by ldapjs, or undefined if it is none or is one ldapjs must not be given (dnParsable). */
export function parseDn(text: string): LdapDn | undefined {
  if (!dnParsable(text)) return undefined;
  try {
    return DN.fromString(text);
  } catch {
    return undefined;
  }
}
