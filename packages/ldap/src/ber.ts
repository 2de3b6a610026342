/**
 * The few LDAP responses the gateway writes, encoded here rather than through
 * ldapjs's message objects: search entries are the hot path (a profile of a
 * Thunderbird-style search spent most of its time building ldapjs
 * Attribute objects), and some responses need bytes ldapjs cannot carry (a
 * password modify response's generated password is BER, which ldapjs writes
 * as a UTF-8 string).
 */

/** RFC 4511 result codes the gateway answers with. */
export const ResultCode = {
  success: 0,
  operationsError: 1,
  protocolError: 2,
  timeLimitExceeded: 3,
  sizeLimitExceeded: 4,
  compareFalse: 5,
  compareTrue: 6,
  authMethodNotSupported: 7,
  unavailableCriticalExtension: 12,
  noSuchAttribute: 16,
  undefinedAttributeType: 17,
  constraintViolation: 19,
  invalidAttributeSyntax: 21,
  noSuchObject: 32,
  invalidDNSyntax: 34,
  inappropriateAuthentication: 48,
  invalidCredentials: 49,
  insufficientAccessRights: 50,
  busy: 51,
  unavailable: 52,
  unwillingToPerform: 53,
  objectClassViolation: 65,
  notAllowedOnRDN: 67,
  adminLimitExceeded: 11,
  other: 80,
} as const;

/** Application tags of the responses (RFC 4511 section 4.2 onwards). */
export const Op = {
  bind: 0x61,
  searchEntry: 0x64,
  searchDone: 0x65,
  modify: 0x67,
  add: 0x69,
  del: 0x6b,
  modDn: 0x6d,
  compare: 0x6f,
  extended: 0x78,
} as const;

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  while (n > 0) {
    out.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return [0x80 | out.length, ...out];
}

/** One TLV: tag, length, then the parts as they are. */
export function tlv(tag: number, parts: readonly Buffer[] | Buffer): Buffer {
  const list = Buffer.isBuffer(parts) ? [parts] : parts;
  let n = 0;
  for (const p of list) n += p.length;
  const head = Buffer.from([tag, ...lengthBytes(n)]);
  return Buffer.concat([head, ...list], head.length + n);
}

export function octets(value: string | Buffer, tag = 0x04): Buffer {
  return tlv(tag, Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8'));
}

export function integer(n: number, tag = 0x02): Buffer {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(tag, Buffer.from(bytes));
}

/** One attribute of an entry: `SEQUENCE { type, SET OF value }`. */
export function attribute(name: string, values: readonly string[]): Buffer {
  return tlv(0x30, [octets(name), tlv(0x31, values.map((v) => octets(v)))]);
}

/** A SearchResultEntry message around attributes encoded once (see attribute()). */
export function searchEntry(messageId: number, dn: string, attributes: Buffer): Buffer {
  return tlv(0x30, [integer(messageId), tlv(Op.searchEntry, [octets(dn), tlv(0x30, attributes)])]);
}

export interface Control {
  oid: string;
  value?: Buffer;
}

/**
 * An LDAPResult-shaped response. `extra` goes after the diagnostic message
 * inside the operation (an extended response's name and value).
 */
export function result(messageId: number, op: number, code: number, message: string, opts: { matchedDN?: string; extra?: Buffer[]; controls?: Control[] } = {}): Buffer {
  const parts = [integer(messageId), tlv(op, [integer(code, 0x0a), octets(opts.matchedDN ?? ''), octets(message), ...(opts.extra ?? [])])];
  if (opts.controls && opts.controls.length > 0) {
    parts.push(tlv(0xa0, opts.controls.map((c) => tlv(0x30, [octets(c.oid), ...(c.value ? [octets(c.value)] : [])]))));
  }
  return tlv(0x30, parts);
}

/** The value of the paged results control (RFC 2696): `SEQUENCE { size INTEGER, cookie OCTET STRING }`. */
export function pagedValue(size: number, cookie: Buffer): Buffer {
  return tlv(0x30, [integer(size), octets(cookie)]);
}
