import { Packr } from 'msgpackr';
import { packValue } from './msgpack-writer.js';

/**
 * Records as stored. Short property names: these are written once per object
 * and once per change, so every byte is paid many times over.
 */
export interface ObjectRecord {
  /** type */
  t: string;
  /** materialised fields, so reads never need Yjs */
  f: Record<string, FieldValue>;
  /** tombstone */
  d: boolean;
  /** HLC of the last change */
  h: number;
  /** HLC of the create, from the object's state (absent in records written before it was kept) */
  c?: number;
  /** local feed seq of the last change */
  s: number;
  /** version: digest of the Yjs state vector and delete set, equal on nodes that converged (yobject.ts docVersion) */
  v: string;
  /**
   * merged Yjs update: the whole state of the object. Absent while the
   * object is as its create made it, when `w` is set instead: the state is
   * then exactly the create's update, which yobject.ts recordState rebuilds
   * from `w`, `f` (in its order), `t` and `c`. Most objects are never
   * changed after their create, and this was 420 of the 733 bytes of a
   * typical Person's record, written again beside the same values in `f`.
   */
  y?: Uint8Array;
  /** the Yjs clientID that wrote the create, for a record without `y` */
  w?: number;
  /**
   * 1 while a field has a conflict of concurrent writes open: a node cloned
   * from this record merges its state, and records the conflict from it,
   * instead of storing the record as it came.
   */
  x?: 1;
}

export interface FeedRecord {
  /** origin node id */
  o: string;
  /** origin seq */
  n: number;
  /** object id */
  i: string;
  /** object type */
  t: string;
  /** Yjs update of this change */
  u: Uint8Array;
  /** HLC */
  h: number;
  /** principal who made the change */
  p: string;
  /** fields changed (names) */
  c: string[];
  /** kind: create, update, delete, undelete; purge (the operator's purge, see Store.purge); redacted (any other change of a purged object, its content removed) */
  k: ChangeKind;
  /** the write's idempotency key, if it had one: every node that applies the change records it */
  q?: string;
}

export type ChangeKind = 'create' | 'update' | 'delete' | 'undelete' | 'purge' | 'redacted';
export type Scalar = string | number | boolean;
export type FieldValue = Scalar | Scalar[];

// structuredClone-free, record-free packing: records are plain and small, and
// shared structures would tie stored bytes to one process's structure table.
// int64 as number: records may come from another implementation through a clone.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'number' });

export function encode(value: unknown): Buffer {
  return packValue(value) ?? packr.pack(value);
}

export function decode<T>(buf: Uint8Array): T {
  return packr.unpack(buf) as T;
}

/**
 * `record` (an encoded ObjectRecord) with its local seq `s` set to `seq`,
 * by splicing the bytes rather than encoding the record again: a clone
 * stores every received record under this node's seq, and re-encoding was
 * a seventh of the receiver's time (profiled). Undefined when the bytes are
 * not a plain map holding `s`, for the caller to encode instead.
 */
export function withSeq(record: Uint8Array, seq: number): Uint8Array | undefined {
  const head = record[0];
  if (head === undefined) return undefined;
  let pos: number;
  let entries: number;
  if (head >= 0x80 && head <= 0x8f) {
    entries = head & 0x0f;
    pos = 1;
  } else if (head === 0xde && record.length >= 3) {
    entries = (record[1]! << 8) | record[2]!;
    pos = 3;
  } else return undefined;
  // where the value of `s` starts and ends; a second `s` (which decoding
  // would let win) leaves the record to the caller
  let at = -1;
  let end = -1;
  for (let i = 0; i < entries; i++) {
    const isSeqKey = record[pos] === 0xa1 && record[pos + 1] === 0x73; // the one-letter string "s"
    pos = skipValue(record, pos, 0);
    if (pos < 0) return undefined;
    const next = skipValue(record, pos, 0);
    if (next < 0) return undefined;
    if (isSeqKey) {
      if (at >= 0) return undefined;
      [at, end] = [pos, next];
    }
    pos = next;
  }
  if (at < 0 || pos !== record.length) return undefined;
  const value = encode(seq);
  const out = Buffer.allocUnsafe(record.length - (end - at) + value.length);
  out.set(record.subarray(0, at), 0);
  out.set(value, at);
  out.set(record.subarray(end), at + value.length);
  return out;
}

/** Nesting a record's values never reach (fields hold scalars or arrays of them). */
const MAX_DEPTH = 32;

/** The position after the MessagePack value at `pos`, or -1 where the bytes end first, hold no value or nest too deep. */
function skipValue(b: Uint8Array, pos: number, depth: number): number {
  const t = b[pos];
  if (t === undefined || depth > MAX_DEPTH) return -1;
  let next: number;
  let items = 0; // nested values still to skip
  if (t < 0x80 || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) next = pos + 1;
  else if (t <= 0x8f) [next, items] = [pos + 1, 2 * (t & 0x0f)];
  else if (t <= 0x9f) [next, items] = [pos + 1, t & 0x0f];
  else if (t <= 0xbf) next = pos + 1 + (t & 0x1f);
  else {
    switch (t) {
      case 0xc4: case 0xd9: next = sized(b, pos, 1, 2); break; // bin8, str8
      case 0xc5: case 0xda: next = sized(b, pos, 2, 3); break; // bin16, str16
      case 0xc6: case 0xdb: next = sized(b, pos, 4, 5); break; // bin32, str32
      case 0xc7: next = sized(b, pos, 1, 3); break; // ext8
      case 0xc8: next = sized(b, pos, 2, 4); break; // ext16
      case 0xc9: next = sized(b, pos, 4, 6); break; // ext32
      case 0xca: next = pos + 5; break;
      case 0xcb: next = pos + 9; break;
      case 0xcc: case 0xd0: next = pos + 2; break;
      case 0xcd: case 0xd1: next = pos + 3; break;
      case 0xce: case 0xd2: next = pos + 5; break;
      case 0xcf: case 0xd3: next = pos + 9; break;
      case 0xd4: next = pos + 3; break; // fixext 1, 2, 4, 8, 16
      case 0xd5: next = pos + 4; break;
      case 0xd6: next = pos + 6; break;
      case 0xd7: next = pos + 10; break;
      case 0xd8: next = pos + 18; break;
      case 0xdc: [next, items] = [pos + 3, uintAt(b, pos + 1, 2)]; break; // array16
      case 0xdd: [next, items] = [pos + 5, uintAt(b, pos + 1, 4)]; break; // array32
      case 0xde: [next, items] = [pos + 3, 2 * uintAt(b, pos + 1, 2)]; break; // map16
      case 0xdf: [next, items] = [pos + 5, 2 * uintAt(b, pos + 1, 4)]; break; // map32
      default: return -1; // 0xc1 is never used
    }
    if (items < 0) return -1;
  }
  for (let i = 0; i < items && next >= 0; i++) next = skipValue(b, next, depth + 1);
  return next >= 0 && next <= b.length ? next : -1;
}

/** The big-endian unsigned integer of `bytes` bytes at `at`, or -1 past the end. */
function uintAt(b: Uint8Array, at: number, bytes: number): number {
  if (at + bytes > b.length) return -1;
  let n = 0;
  for (let i = 0; i < bytes; i++) n = n * 256 + b[at + i]!;
  return n;
}

/** The end of a value at `pos` whose length (`lengthBytes` wide) follows its type byte and whose `header` precedes its data. */
function sized(b: Uint8Array, pos: number, lengthBytes: number, header: number): number {
  const len = uintAt(b, pos + 1, lengthBytes);
  return len < 0 ? -1 : pos + header + len;
}
