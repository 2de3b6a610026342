import { Packr } from 'msgpackr';

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
  /** merged Yjs update: the whole state of the object */
  y: Uint8Array;
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
  return packr.pack(value);
}

export function decode<T>(buf: Uint8Array): T {
  return packr.unpack(buf) as T;
}
