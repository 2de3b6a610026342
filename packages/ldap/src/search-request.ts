import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import { decodeFilter, FilterTooComplex, type Filter, type FilterOptions } from './filter.js';
import { berBool, berText, berTree, type BerNode, type CheckedRequest } from './validate.js';

/**
 * Search requests are decoded here, not by ldapjs: they are nearly every
 * request a directory gets, and ldapjs spent more CPU taking one apart
 * (message objects, the base DN parsed, the filter turned into its string
 * form and parsed again) than the gateway spent answering an equality
 * search. The other operations still go through ldapjs.
 */

/** Request tags (RFC 4511 section 4.2 onwards), in one place */
export const BIND_REQUEST = 0x60;
export const UNBIND_REQUEST = 0x42;
export const SEARCH_REQUEST = 0x63;
export const ABANDON_REQUEST = 0x50;
export const COMPARE_REQUEST = 0x6e;

/** The message ID an abandon request names (RFC 4511 section 4.11). */
export function decodeAbandon(message: Buffer, checked: CheckedRequest): number {
  return integerAt(message, checked.op);
}

/** The request's message ID. */
export function messageIdOf(message: Buffer, checked: CheckedRequest): number {
  return integerAt(message, checked.messageId);
}

/** Whether a bind request (checked) asks for SASL: its authentication choice is `sasl [3]`, not `simple [0]`. */
export function isSaslBind(checked: CheckedRequest): boolean {
  return checked.op.children?.[2]?.tag === 0xa3;
}

/** Whether a bind request (checked) is anonymous: a simple bind with no name and no password (RFC 4513 5.1.1). */
export function isAnonymousBind(checked: CheckedRequest): boolean {
  const [, name, auth] = checked.op.children!;
  return auth!.tag === 0x80 && auth!.end === auth!.start && name!.end === name!.start;
}

export const EXTENDED_REQUEST = 0x77;

/** An extended request's name (its OID), as sent. */
export function extendedName(message: Buffer, checked: CheckedRequest): string {
  return berText(message, checked.op.children![0]);
}

/** The extended operations the gateway serves (RFC 4532 WhoAmI, RFC 3062 password modify). */
export const WHOAMI = '1.3.6.1.4.1.4203.1.11.3';
export const PASSWORD_MODIFY = '1.3.6.1.4.1.4203.1.11.1';
const NOT_PASSWD_MODIFY = 'data decoding error: the request value is not a PasswdModifyRequestValue (userIdentity [0], oldPasswd [1], newPasswd [2], each optional, in that order)';

/** A bind request's LDAP version (checked: an INTEGER, of at most a few bytes here). */
export function bindVersion(message: Buffer, checked: CheckedRequest): number {
  return integerAt(message, checked.op.children![0]!);
}

/**
 * What is wrong with the value of a WhoAmI (RFC 4532: none) or password
 * modify request (RFC 3062: absent, or `SEQUENCE { userIdentity [0],
 * oldPasswd [1], newPasswd [2] }`, each optional, in that order), as slapd
 * words it; undefined when nothing is. ldapjs skipped what it did not
 * expect, so an empty or garbled value changed the password to a
 * generated one, and fields out of order ignored the old password given.
 */
export function extendedValueProblem(message: Buffer, checked: CheckedRequest): string | undefined {
  const [name, value] = checked.op.children!;
  const oid = berText(message, name);
  if (oid === WHOAMI) return value ? 'WhoAmI takes no request value' : undefined;
  if (oid !== PASSWORD_MODIFY || !value) return undefined;
  if (value.end === value.start) return 'empty request data field';
  const top = berTree(message, value.start, value.end, 8);
  const fields = top?.length === 1 && top[0]!.tag === 0x30 ? top[0]!.children : undefined;
  let last = 0x7f;
  for (const f of fields ?? []) {
    if (f.children !== undefined || f.tag <= last || f.tag > 0x82) return NOT_PASSWD_MODIFY;
    last = f.tag;
  }
  return fields ? undefined : NOT_PASSWD_MODIFY;
}

/**
 * Which text a bind, modify, compare or password modify carries that is
 * not UTF-8, with the result code to refuse it with; undefined when all
 * is. ldapjs decodes these values as UTF-8, each bad byte becoming U+FFFD,
 * so a password set in Latin-1 was matched by any other byte in its place,
 * and a value stored changed unseen. slapd compares passwords as octets
 * and refuses such attribute values (invalidAttributeSyntax); here
 * passwords are text, so one that is not UTF-8 can be no one's.
 */
export function notUtf8(message: Buffer, checked: CheckedRequest): { code: number; text: string } | undefined {
  const c = checked.op.children!;
  const bad = (n: BerNode | undefined): boolean => n !== undefined && !isUtf8(message.subarray(n.start, n.end));
  switch (checked.op.tag) {
    case BIND_REQUEST:
      return c[2]!.tag === 0x80 && bad(c[2]) ? { code: 49, text: 'the password is not UTF-8 text, so it is no one\'s; send it in UTF-8' } : undefined;
    case MODIFY_REQUEST:
      for (const change of c[1]!.children!) {
        const [type, values] = change.children![1]!.children!;
        if (values!.children!.some(bad)) return { code: 21, text: `a value of ${berText(message, type).slice(0, 64)} is not UTF-8 text; send values in UTF-8` };
      }
      return undefined;
    case COMPARE_REQUEST:
      return bad(c[1]!.children![1]) ? { code: 21, text: 'the value to compare is not UTF-8 text; send it in UTF-8' } : undefined;
    case EXTENDED_REQUEST: {
      if (berText(message, c[0]) !== PASSWORD_MODIFY || !c[1] || c[1].end === c[1].start) return undefined;
      // (its shape was checked by extendedValueProblem)
      const fields = berTree(message, c[1].start, c[1].end, 8)?.[0]?.children ?? [];
      return fields.some((f) => f.tag !== 0x80 && bad(f)) ? { code: 53, text: 'a password in the request is not UTF-8 text; send passwords in UTF-8' } : undefined;
    }
    default:
      return undefined;
  }
}

export const ADD_REQUEST = 0x68;
export const DELETE_REQUEST = 0x4a;
export const MODIFY_DN_REQUEST = 0x6c;
export const MODIFY_REQUEST = 0x66;

/**
 * The DNs a request names, which ldapjs would parse: the bind name, the
 * entry of an add, compare, delete or modify DN (and its new RDN and new
 * superior), the object of a modify; none for other operations.
 */
export function requestDns(message: Buffer, checked: CheckedRequest): string[] {
  const c = checked.op.children;
  switch (checked.op.tag) {
    case BIND_REQUEST:
      return [berText(message, c![1])];
    case DELETE_REQUEST:
      return [berText(message, checked.op)];
    case MODIFY_DN_REQUEST:
      // entry, newrdn, deleteoldrdn, [newSuperior]
      return [berText(message, c![0]), berText(message, c![1]), ...(c![3] ? [berText(message, c![3])] : [])];
    case MODIFY_REQUEST:
    case ADD_REQUEST:
    case COMPARE_REQUEST:
      return [berText(message, c![0])];
    default:
      return [];
  }
}

/**
 * A compare request (checked), for the one the gateway answers without
 * ldapjs: of the root DSE, whose empty DN ldapjs refuses as invalid.
 */
export function decodeCompare(message: Buffer, checked: CheckedRequest, connection: Socket): CompareRequest {
  const [entry, ava] = checked.op.children!;
  const [attribute, value] = ava!.children!;
  return { messageId: messageIdOf(message, checked), protocolOp: COMPARE_REQUEST, connection, controls: [], entry: berText(message, entry), attribute: berText(message, attribute), value: berText(message, value) };
}

/** RFC 4511 section 4.10, as the gateway reads it (ldapjs's parsed request has these fields too). */
export interface CompareRequest {
  readonly messageId: number;
  readonly protocolOp: number;
  readonly connection: Socket;
  readonly controls: readonly { readonly type: string; readonly criticality: boolean }[];
  /** a string, or ldapjs's parsed DN */
  readonly entry?: unknown;
  readonly attribute?: string;
  readonly value?: string;
}

/**
 * The first change of a modify request (checked) whose operation is not
 * add (0), delete (1) or replace (2), such as increment (3, RFC 4525):
 * ldapjs throws on those and closed the connection unanswered.
 */
export function unknownModifyOperation(message: Buffer, checked: CheckedRequest): number | undefined {
  for (const change of checked.op.children?.[1]?.children ?? []) {
    const op = integerAt(message, change.children![0]!);
    if (op < 0 || op > 2) return op;
  }
  return undefined;
}

/** The paged results control (RFC 2696): the one control whose value a search keeps. */
export const PAGED_CONTROL = '1.2.840.113556.1.4.319';

export interface RequestControl {
  readonly type: string;
  readonly criticality: boolean;
  /** the control's value, as sent */
  readonly value: Buffer | undefined;
}

/** RFC 4511 section 4.5.1, as the gateway reads it. */
export interface SearchRequest {
  readonly messageId: number;
  readonly protocolOp: typeof SEARCH_REQUEST;
  readonly connection: Socket;
  readonly controls: readonly RequestControl[];
  readonly baseObject: string;
  /** 0 base, 1 one level, 2 subtree, 3 children (subordinate subtree); anything else is refused when the search runs */
  readonly scope: number;
  /** 0: no limit asked for */
  readonly sizeLimit: number;
  /** seconds; 0: no limit asked for */
  readonly timeLimit: number;
  readonly typesOnly: boolean;
  readonly attributes: readonly string[];
  /**
   * the filter, decoded as the request arrives, so that a search held back
   * keeps this small tree rather than the request's BER elements; one too
   * complex is kept as its error, which the search answers
   */
  readonly filter: Filter | FilterTooComplex;
}

/** A BER INTEGER or ENUMERATED, clamped to the safe integers (a longer one is nonsense anyway). */
function integerAt(b: Buffer, n: BerNode): number {
  if (n.end === n.start) return 0;
  let v = (b[n.start]! & 0x80) !== 0 ? -1 : 0;
  for (let i = n.start; i < n.end; i++) {
    v = v * 256 + b[i]!;
    if (!Number.isSafeInteger(v)) return v < 0 ? Number.MIN_SAFE_INTEGER : Number.MAX_SAFE_INTEGER;
  }
  return v;
}

/** The controls of a request, as the client sent them (none decoded by type: ldapjs threw on some it knows). */
export function controlsOf(b: Buffer, list: BerNode | undefined): RequestControl[] {
  if (!list) return [];
  return list.children!.map((c) => {
    const [type, second, third] = c.children!;
    const critical = second?.tag === 0x01 ? second : undefined;
    const value = second?.tag === 0x04 ? second : third;
    return { type: berText(b, type!), criticality: critical !== undefined && berBool(b, critical), value: value && b.subarray(value.start, value.end) };
  });
}

/** A search request from a message checkRequest found well-formed, its op being a search, and its controls (controlsOf). */
export function decodeSearch(message: Buffer, checked: CheckedRequest, controls: readonly RequestControl[], connection: Socket, filterOptions: FilterOptions): SearchRequest {
  const [base, scope, , size, time, typesOnly, filter, attributes] = checked.op.children!;
  return {
    messageId: integerAt(message, checked.messageId),
    protocolOp: SEARCH_REQUEST,
    connection,
    // (the values are parts of the message: a search waiting its turn keeps a copy of the one value
    // it reads, not the whole request)
    controls: controls.map((c) => ({ ...c, value: c.type === PAGED_CONTROL && c.value ? Buffer.from(c.value) : undefined })),
    baseObject: berText(message, base!),
    scope: integerAt(message, scope!),
    sizeLimit: integerAt(message, size!),
    timeLimit: integerAt(message, time!),
    typesOnly: berBool(message, typesOnly!),
    attributes: attributes!.children!.map((a) => berText(message, a)),
    filter: filterOf(message, filter!, filterOptions),
  };
}

function filterOf(message: Buffer, root: BerNode, options: FilterOptions): Filter | FilterTooComplex {
  try {
    return decodeFilter(message, root, options);
  } catch (e) {
    if (e instanceof FilterTooComplex) return e;
    throw e;
  }
}

/** The paged results control's value (RFC 2696): undefined when it is not a page size (0 or more) and a cookie. */
export function decodePaged(value: Buffer | undefined): { size: number; cookie: Buffer } | undefined {
  if (!value) return undefined;
  // (three elements at most: a value of nested elements is refused before it is all read)
  const top = berTree(value, 0, value.length, 8);
  const seq = top?.length === 1 && top[0]!.tag === 0x30 ? top[0]!.children : undefined;
  if (!seq || seq.length !== 2 || seq[0]!.tag !== 0x02 || seq[0]!.children || seq[1]!.tag !== 0x04 || seq[1]!.children) return undefined;
  // (a negative size would answer every page empty, with the same cookie, for ever)
  const size = integerAt(value, seq[0]!);
  return size < 0 ? undefined : { size, cookie: value.subarray(seq[1]!.start, seq[1]!.end) };
}
