import type { ChangeKind, FieldValue } from './codec.js';
import { parseSeqPart, SEP } from './keys.js';
import { publicFields, type TypeDef } from './schema.js';
import { docFromState, readFields, sameValue } from './yobject.js';

/**
 * What one change did to one object, as this node applied it: kept beside
 * the feed entry (`h<id>\0<seq>`) and trimmed with it. The feed entry holds
 * the Yjs update, which says what was written but not what was there
 * before; this record holds both, so a history can show old and new values
 * and a revert can put back the whole object as it was, without replaying
 * Yjs from the object's first change (which a trimmed feed no longer has).
 * Password fields show only that they changed: their hashes stay in the
 * object alone.
 *
 * A change that found no object here (a create, or a remote change that
 * arrived before the create) leaves `f`, `c` and `b` out: the object is then
 * exactly what the change's Yjs update sets, and the feed entry beside it
 * holds that update (see `fromUpdate`). Writing them out again cost 258
 * of 1,190 bytes on disk per object and 8 of a Person create's 66 us
 * (docs/storage.md).
 */
export interface HistoryRecord {
  /** origin node and origin seq: the change's name on every node */
  o: string;
  n: number;
  /** HLC */
  h: number;
  /** principal */
  p: string;
  k: ChangeKind;
  /** every non-password field after the change (absent: see above) */
  f?: Record<string, FieldValue>;
  /** tombstoned after the change */
  d: boolean;
  /** the fields the change altered, password fields included */
  c?: string[];
  /** values the altered non-password fields had before (absent: not set, or see above) */
  b?: Record<string, FieldValue>;
}

/** One version of an object, as history shows it. */
export interface ObjectVersion {
  /** `origin#originSeq`: names the same change on every node */
  version: string;
  /** local feed seq */
  seq: number;
  origin: string;
  originSeq: number;
  hlc: number;
  principal: string;
  kind: ChangeKind;
  deleted: boolean;
  /** each altered field's old and new value (undefined: not set; password fields hold neither) */
  changes: { field: string; old?: FieldValue | undefined; new?: FieldValue | undefined; secret?: true }[];
  /** the object's non-password fields after this change */
  fields: Record<string, FieldValue>;
}

export interface ObjectHistory {
  id: string;
  versions: ObjectVersion[];
  /**
   * Whether the object's earlier changes were trimmed from this node's feed
   * (or never were in it: a node cloned from another starts its feed at the
   * clone). The oldest version shown is then not the object's first.
   */
  truncated: boolean;
  /** the oldest feed position this node still holds */
  firstSeq: number;
}

/** The history record of a change that took an object from `before` to `after`. */
export function historyRecord(
  def: TypeDef | undefined,
  change: { origin: string; originSeq: number; hlc: number; principal: string; kind: ChangeKind },
  before: Readonly<Record<string, FieldValue>> | undefined,
  after: Readonly<Record<string, FieldValue>>,
  deleted: boolean,
): HistoryRecord {
  if (before === undefined) return { o: change.origin, n: change.originSeq, h: change.hlc, p: change.principal, k: change.kind, d: deleted };
  const f = publicFields(def, after);
  const b: Record<string, FieldValue> = {};
  const c: string[] = [];
  const secret = (name: string): boolean => def?.fields.get(name)?.kind === 'password';
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  for (const name of names) {
    const old = before[name];
    if (sameValue(old, after[name])) continue;
    c.push(name);
    if (old !== undefined && !secret(name)) b[name] = old;
  }
  return { o: change.origin, n: change.originSeq, h: change.hlc, p: change.principal, k: change.kind, f, d: deleted, c: c.sort(), b };
}

/**
 * The version a history record describes. `update` is the Yjs update of
 * the feed entry at the same seq, which a record without fields needs.
 */
export function toVersion(key: string, r: HistoryRecord, def: TypeDef | undefined, update?: Uint8Array): ObjectVersion {
  const seq = parseSeqPart(key.slice(key.lastIndexOf(SEP) + 1));
  const { f, c, b } = r.f !== undefined ? { f: r.f, c: r.c ?? [], b: r.b ?? {} } : fromUpdate(update);
  const changes = c.map((field) =>
    def?.fields.get(field)?.kind === 'password' ? { field, secret: true as const } : { field, old: b[field], new: f[field] },
  );
  // (by the schema now: a field that became a password since the record was written is left out, or a
  // revert to this version would bring back the old hash)
  return { version: `${r.o}#${r.n}`, seq, origin: r.o, originSeq: r.n, hlc: r.h, principal: r.p, kind: r.k, deleted: r.d, changes, fields: publicFields(def, f) };
}

/** What historyRecord leaves out for a change that found no object: every field its update sets is new. */
function fromUpdate(update: Uint8Array | undefined): { f: Record<string, FieldValue>; c: string[]; b: Record<string, FieldValue> } {
  if (update === undefined) throw new Error('a history record without fields needs the update of its feed entry');
  const doc = docFromState('history', update, 0);
  const after = readFields(doc);
  doc.destroy();
  return { f: after, c: Object.keys(after).sort(), b: {} };
}

/** `origin#seq`, as history names versions. */
export function parseVersionName(name: string): { origin: string; originSeq: number } | undefined {
  const m = /^([A-Za-z0-9._-]{1,128})#([1-9][0-9]{0,15})$/.exec(name);
  return m ? { origin: m[1]!, originSeq: Number(m[2]) } : undefined;
}
