/**
 * Checks a request's shape against RFC 4511's grammar before ldapjs parses
 * it. ldapjs 3.0.7's readers loop "while not at the end" over lists and
 * expect each element to have the right tag; an element with another tag
 * is not consumed, and the loop grows an array until V8 aborts the process
 * ("Fatal JavaScript invalid size error", found by test/ldap-fuzz.test.ts).
 * No try/catch survives that, so malformed requests must not reach it.
 */

/** One BER element: its tag, where its contents lie in the message, and its elements if constructed. */
export interface BerNode {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
  /** undefined for a primitive */
  readonly children: BerNode[] | undefined;
}
type Node = BerNode;

const MAX_DEPTH = 64;

/** A primitive's contents as UTF-8 (empty for a missing node). */
export const berText = (b: Buffer, n: BerNode | undefined): string => (n ? b.toString('utf8', n.start, n.end) : '');

/** A BOOLEAN's value: any octet but zero is TRUE. */
export const berBool = (b: Buffer, n: BerNode): boolean => b.subarray(n.start, n.end).some((x) => x !== 0);

/**
 * Most elements one request may have. A megabyte of two-byte elements is
 * half a million nodes, some 30 MB of objects, for a request that asks
 * nothing sensible (a filter of 340,000 substring parts); a hundred of them
 * held at once by one connection is gigabytes. Real requests have a few
 * dozen, a modify of a long multi-valued attribute a few thousand.
 */
export const MAX_NODES = 65_536;

/** Parses BER into a tree of tags; undefined when lengths do not nest exactly, or past maxNodes elements. */
export function berTree(b: Buffer, start = 0, end = b.length, maxNodes = Infinity): BerNode[] | undefined {
  let left = maxNodes;
  const level = (start: number, end: number, depth: number): BerNode[] | undefined => {
    if (depth > MAX_DEPTH) return undefined;
    const out: Node[] = [];
    let i = start;
    while (i < end) {
      if (--left < 0) return undefined;
      const tag = b[i++]!;
      if ((tag & 0x1f) === 0x1f) return undefined; // multi-byte tags are not LDAP
      if (i >= end) return undefined;
      let length = b[i++]!;
      if (length & 0x80) {
        const n = length & 0x7f;
        if (n === 0 || n > 4 || i + n > end) return undefined;
        length = 0;
        for (let k = 0; k < n; k++) length = length * 256 + b[i++]!;
      }
      if (i + length > end) return undefined;
      const constructed = (tag & 0x20) !== 0;
      const children = constructed ? level(i, i + length, depth + 1) : undefined;
      if (constructed && !children) return undefined;
      out.push({ tag, start: i, end: i + length, children });
      i += length;
    }
    return out;
  };
  return level(start, end, 0);
}

const prim = (n: Node | undefined, tag: number): boolean => n !== undefined && n.tag === tag && n.children === undefined;
const seqOf = (n: Node | undefined, tag: number, each: (c: Node) => boolean): boolean => n !== undefined && n.tag === tag && n.children !== undefined && n.children.every(each);

function attributeValueAssertion(n: Node): boolean {
  return n.children!.length === 2 && prim(n.children![0], 0x04) && prim(n.children![1], 0x04);
}

function filter(n: Node): boolean {
  const c = n.children;
  switch (n.tag) {
    case 0xa0: // and
    case 0xa1: // or
      // (empty: the absolute true and false of RFC 4526, which the root DSE advertises)
      return c !== undefined && c.every(filter);
    case 0xa2: // not
      return c !== undefined && c.length === 1 && filter(c[0]!);
    case 0xa3: // equality
    case 0xa5: // greater or equal
    case 0xa6: // less or equal
    case 0xa8: // approx
      return c !== undefined && attributeValueAssertion(n);
    case 0xa4: // substrings
      return c !== undefined && c.length === 2 && prim(c[0], 0x04) && seqOf(c[1], 0x30, (s) => s.children === undefined && s.tag >= 0x80 && s.tag <= 0x82) && c[1]!.children!.length > 0;
    case 0x87: // present
      return c === undefined;
    case 0xa9: // extensible
      return c !== undefined && c.every((x) => x.children === undefined && x.tag >= 0x81 && x.tag <= 0x84) && c.some((x) => x.tag === 0x83);
    default:
      return false;
  }
}

/** `SEQUENCE { type OCTET STRING, vals SET OF OCTET STRING }` */
const partialAttribute = (a: Node | undefined): boolean =>
  a !== undefined && a.tag === 0x30 && a.children?.length === 2 && prim(a.children[0], 0x04) && seqOf(a.children[1], 0x31, (v) => prim(v, 0x04));
const attributeList = (n: Node | undefined): boolean => seqOf(n, 0x30, partialAttribute);

function operation(op: Node): boolean {
  const c = op.children;
  switch (op.tag) {
    case 0x60: // bind
      return c !== undefined && c.length === 3 && prim(c[0], 0x02) && prim(c[1], 0x04) && (prim(c[2], 0x80) || seqOf(c[2], 0xa3, (x) => x.children === undefined));
    case 0x42: // unbind
    case 0x4a: // delete
    case 0x50: // abandon
      return c === undefined;
    case 0x63: // search
      return (
        c !== undefined &&
        c.length === 8 &&
        prim(c[0], 0x04) &&
        prim(c[1], 0x0a) &&
        prim(c[2], 0x0a) &&
        prim(c[3], 0x02) &&
        prim(c[4], 0x02) &&
        prim(c[5], 0x01) &&
        filter(c[6]!) &&
        seqOf(c[7], 0x30, (a) => prim(a, 0x04))
      );
    case 0x66: // modify
      return (
        c !== undefined &&
        c.length === 2 &&
        prim(c[0], 0x04) &&
        seqOf(c[1], 0x30, (ch) => ch.tag === 0x30 && ch.children?.length === 2 && prim(ch.children[0], 0x0a) && partialAttribute(ch.children[1]))
      );
    case 0x68: // add
      return c !== undefined && c.length === 2 && prim(c[0], 0x04) && attributeList(c[1]);
    case 0x6c: // modify DN
      return c !== undefined && c.length >= 3 && c.length <= 4 && prim(c[0], 0x04) && prim(c[1], 0x04) && prim(c[2], 0x01) && (c.length === 3 || prim(c[3], 0x80));
    case 0x6e: // compare
      return c !== undefined && c.length === 2 && prim(c[0], 0x04) && seqOf(c[1], 0x30, () => true) && attributeValueAssertion(c[1]!);
    case 0x77: // extended
      return c !== undefined && c.length >= 1 && c.length <= 2 && prim(c[0], 0x80) && (c.length === 1 || prim(c[1], 0x81));
    default:
      return false;
  }
}

/** An LDAP message whose shape checkRequest found well-formed. */
export interface CheckedRequest {
  readonly messageId: BerNode;
  readonly op: BerNode;
  readonly controls: BerNode | undefined;
}

/** The message's parts when it is a well-formed LDAP request; else what is wrong with it, in a few words. */
export function checkRequest(message: Buffer): CheckedRequest | string {
  const top = berTree(message, 0, message.length, MAX_NODES);
  if (!top || top.length !== 1) return `the request is not well-formed BER, or has more than ${MAX_NODES} elements`;
  const m = top[0]!;
  const c = m.children;
  if (m.tag !== 0x30 || !c || c.length < 2 || c.length > 3 || !prim(c[0], 0x02)) return 'the request is not an LDAP message';
  // MessageID ::= INTEGER (0 .. maxInt): one to four bytes, not negative
  const id = c[0]!;
  if (id.end - id.start < 1 || id.end - id.start > 4 || (message[id.start]! & 0x80) !== 0) return "the request's message ID is not between 0 and 2^31 - 1";
  if (!operation(c[1]!)) return `the request's operation (tag 0x${c[1]!.tag.toString(16)}) is malformed or unknown`;
  const control = (ctl: Node): boolean => {
    const k = ctl.children;
    if (ctl.tag !== 0x30 || !k || k.length < 1 || k.length > 3 || !prim(k[0], 0x04)) return false;
    if (k.length === 2) return prim(k[1], 0x01) || prim(k[1], 0x04);
    return k.length === 1 || (prim(k[1], 0x01) && prim(k[2], 0x04));
  };
  if (c.length === 3 && !seqOf(c[2], 0xa0, control)) return "the request's controls are malformed";
  return { messageId: c[0]!, op: c[1]!, controls: c[2] };
}
