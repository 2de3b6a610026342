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
  strongerAuthRequired: 8,
  unavailableCriticalExtension: 12,
  noSuchAttribute: 16,
  attributeOrValueExists: 20,
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
  /** RFC 3909; never sent: an abandoned operation gets no answer, this counts it in the metrics */
  canceled: 118,
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

/** Bytes of a tag and a definite length of `n`. */
function headSize(n: number): number {
  return n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : n < 0x1000000 ? 5 : 6;
}

function writeHead(buf: Buffer, at: number, tag: number, n: number): number {
  buf[at++] = tag;
  if (n < 0x80) {
    buf[at++] = n;
    return at;
  }
  const bytes = headSize(n) - 2;
  buf[at++] = 0x80 | bytes;
  for (let i = bytes - 1; i >= 0; i--) buf[at++] = Math.floor(n / 256 ** i) & 0xff;
  return at;
}

/**
 * The body of a SearchResultEntry, `objectName` and `attributes`, as one
 * buffer written in one pass: sizes first, then the bytes, with no buffer
 * per value (building one per value and concatenating them was most of
 * the gateway's garbage in a substring search). Names come with their
 * values; `values` empty writes the attribute with an empty set (typesOnly).
 */
export function entryBody(dn: string, attrs: readonly { name: string; values: readonly string[] }[]): Buffer {
  const dnLen = Buffer.byteLength(dn);
  const sizes: number[] = [];
  let list = 0;
  for (const a of attrs) {
    const nameLen = Buffer.byteLength(a.name);
    let set = 0;
    for (const v of a.values) {
      const n = Buffer.byteLength(v);
      sizes.push(n);
      set += headSize(n) + n;
    }
    const seq = headSize(nameLen) + nameLen + headSize(set) + set;
    sizes.push(nameLen, set, seq);
    list += headSize(seq) + seq;
  }
  const buf = Buffer.allocUnsafe(headSize(dnLen) + dnLen + headSize(list) + list);
  let at = writeHead(buf, 0, 0x04, dnLen);
  at += buf.write(dn, at, 'utf8');
  at = writeHead(buf, at, 0x30, list);
  let k = 0;
  for (const a of attrs) {
    // the sizes of one attribute were pushed as its values', then name, set and sequence
    const vs = a.values.length;
    const [nameLen, set, seq] = [sizes[k + vs]!, sizes[k + vs + 1]!, sizes[k + vs + 2]!];
    at = writeHead(buf, at, 0x30, seq);
    at = writeHead(buf, at, 0x04, nameLen);
    at += buf.write(a.name, at, 'utf8');
    at = writeHead(buf, at, 0x31, set);
    for (let i = 0; i < vs; i++) {
      at = writeHead(buf, at, 0x04, sizes[k + i]!);
      at += buf.write(a.values[i]!, at, 'utf8');
    }
    k += vs + 3;
  }
  return buf;
}

/**
 * The bytes of a SearchResultEntry message that come before a body made by
 * entryBody(): the message is these and then the body, sent as they are (a
 * cached body is never copied).
 */
export function searchEntryHead(messageId: number, body: Buffer): Buffer {
  // written in place: going through integer() (a byte array, then two buffers) was 8% of a substring search
  const id = messageIdSize(messageId);
  const op = headSize(body.length) + body.length;
  const buf = Buffer.allocUnsafe(headSize(id + op) + id + headSize(body.length));
  let at = writeHead(buf, 0, 0x30, id + op);
  at = writeMessageId(buf, at, messageId);
  writeHead(buf, at, Op.searchEntry, body.length);
  return buf;
}

/** Bytes of a message ID's INTEGER TLV (IDs are 0 to 2^31 - 1: checkRequest refuses others). */
function messageIdSize(messageId: number): number {
  let n = 1;
  while (n < 4 && messageId >= 2 ** (8 * n - 1)) n++;
  return 2 + n;
}

function writeMessageId(buf: Buffer, at: number, messageId: number): number {
  const n = messageIdSize(messageId) - 2;
  buf[at++] = 0x02;
  buf[at++] = n;
  for (let i = n - 1; i >= 0; i--) buf[at++] = Math.floor(messageId / 256 ** i) & 0xff;
  return at;
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
  if (message === '' && !opts.matchedDN && !opts.extra?.length && !opts.controls?.length && code < 0x80) {
    // the answer to nearly every search, written in place (through tlv() it was 3.5% of an equality search)
    const id = messageIdSize(messageId);
    const buf = Buffer.allocUnsafe(2 + id + 9);
    buf[0] = 0x30;
    buf[1] = id + 9;
    const at = writeMessageId(buf, 2, messageId);
    buf.set([op, 7, 0x0a, 1, code, 0x04, 0, 0x04, 0], at);
    return buf;
  }
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
