import { hash } from 'node:crypto';
import * as Y from 'yjs';
import type { FieldValue, ObjectRecord } from './codec.js';

/**
 * One object is one Y.Doc (guid = object id): a Y.Map "f" of fields and a
 * Y.Map "m" of metadata (type, deleted). A multi-valued field is one list
 * value, so concurrent edits of a field resolve as one last-writer-wins choice
 * per field, which is what conflicts are recorded against.
 *
 * A third map, "s", settles conflicts (conflicts.ts): its keys name a
 * field's items ("client:clock") that a writer had seen lose when it wrote
 * or removed that field, or that it removed. It travels inside the object's state like
 * everything else, so every node, a cloned one included, derives the same
 * open conflicts from the same state.
 */
const FIELDS = 'f';
const META = 'm';
const SETTLED = 's';

/** A field's item, in the settled map, that its writer saw lose and wrote over or removed. */
const SETTLED_LOST = 1;
/**
 * A field's item, in the settled map, that its writer removed. Marked on
 * every removal: where the item lost to a concurrent write first, its value
 * is kept, and the removal (which deletes what is deleted already) would
 * otherwise leave no trace there, while a node that saw the removal first
 * dropped it: the two would list different conflicts.
 */
const SETTLED_REMOVED = 2;

function makeDoc(id: string): Y.Doc {
  const doc: Y.Doc = new Y.Doc({
    guid: id,
    gc: true,
    gcFilter: (item) => {
      if (!keepsContent(doc, item)) return true;
      let kept = keptFields.get(doc);
      if (!kept) keptFields.set(doc, (kept = new Set()));
      kept.add(item.parentSub!);
      return false;
    },
  });
  return doc;
}

/**
 * The fields of a doc that hold a kept value (see keepsContent), noted as
 * Yjs asks the gcFilter, on load too. Only such a field can have a head
 * besides the item it shows (every other item of a key is deleted, and
 * without its value), so only there do heads need a walk, and only there
 * can a value be left to drop.
 */
const keptFields = new WeakMap<Y.Doc, Set<string>>();

/** Whether the doc holds a kept value: in `key`, or in any field. */
export function holdsKeptValues(doc: Y.Doc, key?: string): boolean {
  const kept = keptFields.get(doc);
  return kept !== undefined && (key === undefined ? kept.size > 0 : kept.has(key));
}

export function newDoc(id: string, clientId: number): Y.Doc {
  const doc = makeDoc(id);
  doc.clientID = clientId;
  return doc;
}

export function docFromState(id: string, state: Uint8Array, clientId: number): Y.Doc {
  const doc = makeDoc(id);
  Y.applyUpdate(doc, state);
  // Set after loading: Yjs replaces a doc's clientID with a random one when
  // a non-local transaction carries items of that clientID, which loading
  // our own earlier changes does.
  doc.clientID = clientId;
  return doc;
}

/** "client:clock" of an item's last clock: what origins and the settled map name. */
export function lastItemId(item: Y.Item): string {
  return `${item.id.client}:${item.id.clock + item.length - 1}`;
}

/** The client and clock of a "client:clock" item id, or undefined for anything else. */
export function parseItemId(id: string): { client: number; clock: number } | undefined {
  const colon = id.indexOf(':');
  const client = Number(id.slice(0, colon));
  const clock = Number(id.slice(colon + 1));
  return colon > 0 && colon < id.length - 1 && Number.isSafeInteger(client) && Number.isSafeInteger(clock) && clock >= 0 ? { client, clock } : undefined;
}

/**
 * The fields whose heads a transaction may have changed: those it wrote,
 * removed or lost a write to, and those of items it settled (a mark can
 * arrive after the write it came with, when Yjs held it back).
 */
export function fieldsTouched(tr: Y.Transaction, doc: Y.Doc, into: Set<string>): void {
  const fields = doc.share.get(FIELDS);
  const settled = doc.share.get(SETTLED);
  for (const [type, keys] of tr.changed) {
    if (type === fields) {
      for (const k of keys) if (k !== null) into.add(k);
    } else if (type === settled) {
      for (const k of keys) {
        const id = k === null ? undefined : parseItemId(k);
        // (a mark may name an item not here yet; getItem would throw)
        if (!id || Y.getState(doc.store, id.client) <= id.clock) continue;
        const item = Y.getItem(doc.store, Y.createID(id.client, id.clock));
        if (item instanceof Y.Item && item.parent === fields && item.parentSub !== null) into.add(item.parentSub);
      }
    }
  }
}

function settledMap(doc: Y.Doc): Y.Map<unknown> | undefined {
  // (a root type a remote update made is a bare AbstractType until asked for as a map)
  return doc.share.has(SETTLED) ? doc.getMap<unknown>(SETTLED) : undefined;
}

/**
 * Yjs drops a deleted item's value when the transaction that deleted it
 * ends. A field's value that lost to a concurrent write is kept while it is
 * an open head (nothing written after it, not settled): it is one of the
 * values of the field's conflict, on every node, however its state came.
 */
function keepsContent(doc: Y.Doc, item: Y.Item): boolean {
  if (item.content instanceof Y.ContentDeleted || item.parentSub === null || item.parent !== doc.share.get(FIELDS)) return false;
  // Deleted with nothing after it in its key's list: removed, not lost to a later item.
  // (A lost item always has the item that won after it, when it is deleted and ever after.)
  if (item.right === null) return false;
  const last = item.id.clock + item.length - 1;
  // whatever was written over an item comes after it in its key's list
  for (let r: Y.Item | null = item.right; r !== null; r = r.right) {
    if (r.origin !== null && r.origin.client === item.id.client && r.origin.clock === last) return false;
  }
  return settledMap(doc)?.get(lastItemId(item)) === undefined;
}

/**
 * Drops the values of these fields' items that are deleted and no longer
 * open heads. Yjs asks the gcFilter only about items a transaction deletes,
 * so a value kept while it lost stayed after a later write or mark settled
 * it, in the held doc and in every state written from it, until the state
 * was next loaded. Called after each transaction that can settle one.
 */
export function dropClosedValues(doc: Y.Doc, keys: Iterable<string>): void {
  const kept = keptFields.get(doc);
  if (!kept) return;
  const map = doc.getMap<unknown>(FIELDS);
  for (const key of keys) {
    if (!kept.has(key)) continue;
    let still = false;
    for (let it: Y.Item | null = map._map.get(key) ?? null; it !== null; it = it.left) {
      if (!it.deleted || it.content instanceof Y.ContentDeleted) continue;
      if (keepsContent(doc, it)) still = true;
      else it.gc(doc.store, false);
    }
    if (!still) kept.delete(key);
  }
}

/** The item a field shows: the last of its key's list (a removal when the field is not set). */
export function shownItem(doc: Y.Doc, key: string): Y.Item | undefined {
  return doc.getMap<unknown>(FIELDS)._map.get(key);
}

export interface FieldHead {
  item: Y.Item;
  value: FieldValue;
}

/**
 * The field's open heads: its items that nothing was written over, no
 * writer settled or removed, and whose value the state holds. Two or more
 * are a conflict; the item listed last is the one the field shows. A
 * removal is never one side of a conflict (as CouchDB lists no deleted
 * revision among a document's conflicts), and a value lost in a state
 * written before 2026-11-24, which Yjs dropped, is not either.
 */
export function fieldHeads(doc: Y.Doc, key: string): FieldHead[] {
  const map = doc.getMap<unknown>(FIELDS);
  const rightmost = map._map.get(key);
  if (!rightmost) return [];
  const settled = settledMap(doc);
  const headOf = (it: Y.Item): FieldHead => ({ item: it, value: it.content.getContent().at(-1) as FieldValue });
  const lone = (): FieldHead[] => (rightmost.content instanceof Y.ContentDeleted || settled?.get(lastItemId(rightmost)) !== undefined ? [] : [headOf(rightmost)]);
  // the common case: no kept value, so at most the item shown (see holdsKeptValues)
  if (!holdsKeptValues(doc, key)) return lone();
  // each item written over the one before it, a single chain
  let chain = true;
  for (let it: Y.Item | null = rightmost; it !== null && chain; it = it.left) {
    const left: Y.Item | null = it.left;
    chain = left === null ? it.origin === null : it.origin !== null && it.origin.client === left.id.client && it.origin.clock === left.id.clock + left.length - 1;
  }
  if (chain) return lone();
  const origins = new Set<string>();
  const items: Y.Item[] = [];
  for (let it: Y.Item | null = rightmost; it !== null; it = it.left) {
    items.push(it);
    if (it.origin !== null) origins.add(`${it.origin.client}:${it.origin.clock}`);
  }
  const heads: FieldHead[] = [];
  for (let i = items.length - 1; i >= 0; i--) {
    const it = items[i]!;
    const id = lastItemId(it);
    if (origins.has(id) || it.content instanceof Y.ContentDeleted || settled?.get(id) !== undefined) continue;
    heads.push(headOf(it));
  }
  return heads;
}

export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
  return a.every((v, i) => v === b[i]);
}

export interface LocalChange {
  /** the Yjs update of this change, or undefined when it changed nothing */
  update: Uint8Array | undefined;
  changed: string[];
}

/**
 * Applies field sets/removals and metadata in one Yjs transaction and returns
 * the update it produced. Values equal to the current ones are not written, so
 * a write that changes nothing produces no update and no feed entry.
 */
export function applyLocal(
  doc: Y.Doc,
  fields: Readonly<Record<string, FieldValue | null>>,
  meta: { type?: string; deleted?: boolean; created?: number },
): LocalChange {
  const f = doc.getMap<FieldValue>(FIELDS);
  const m = doc.getMap<unknown>(META);
  const changed: string[] = [];
  let update: Uint8Array | undefined;
  const capture = (u: Uint8Array): void => {
    update = u;
  };
  doc.on('update', capture);
  try {
    doc.transact(() => {
      // A write or removal settles what its writer sees of the field: every head but the one shown
      // lost (a new item is written over the shown one). A removal marks the one it removes too.
      // A write with one head, the usual case, marks nothing.
      const settle: [string, number][] = [];
      const seen = (k: string): void => {
        // one head at most, the item shown, where the field holds no kept value
        if (!holdsKeptValues(doc, k)) return;
        const shown = f._map.get(k);
        for (const h of fieldHeads(doc, k)) if (h.item !== shown) settle.push([lastItemId(h.item), SETTLED_LOST]);
      };
      for (const [k, v] of Object.entries(fields)) {
        if (v === null) {
          if (f.has(k)) {
            seen(k);
            settle.push([lastItemId(f._map.get(k)!), SETTLED_REMOVED]);
            f.delete(k);
            changed.push(k);
          }
        } else if (!sameValue(f.get(k), v)) {
          seen(k);
          f.set(k, Array.isArray(v) ? [...v] : v);
          changed.push(k);
        }
      }
      if (settle.length) {
        const s = doc.getMap<number>(SETTLED);
        for (const [item, how] of settle) s.set(item, how);
      }
      if (meta.type !== undefined && m.get('type') !== meta.type) m.set('type', meta.type);
      if (meta.deleted !== undefined && (m.get('deleted') === true) !== meta.deleted) m.set('deleted', meta.deleted);
      if (meta.created !== undefined && !m.has('created')) m.set('created', meta.created);
    });
  } finally {
    doc.off('update', capture);
  }
  dropClosedValues(doc, changed);
  return { update, changed };
}

export function readFields(doc: Y.Doc): Record<string, FieldValue> {
  const out: Record<string, FieldValue> = {};
  for (const [k, v] of doc.getMap<FieldValue>(FIELDS).entries()) out[k] = Array.isArray(v) ? [...v] : v;
  return out;
}

export function readMeta(doc: Y.Doc): { type: string | undefined; deleted: boolean; created: number | undefined } {
  const m = doc.getMap<unknown>(META);
  const type = m.get('type');
  const created = m.get('created');
  return { type: typeof type === 'string' ? type : undefined, deleted: m.get('deleted') === true, created: typeof created === 'number' ? created : undefined };
}

export function encodeState(doc: Y.Doc): Uint8Array {
  return Y.encodeStateAsUpdate(doc);
}

/**
 * The object's version (the XML gateway's strong ETag): a digest of the Yjs
 * state vector and delete set. Together they name exactly which items a
 * state holds and which of them are deleted, and Yjs integrates one set of
 * items to one content whatever order they arrived in, so two nodes holding
 * the same merged state report the same version. The delete set is what
 * tells a removed field apart: a deletion adds no item. (Until
 * VERSION_FORMULA 2 the visible fields were hashed as JSON instead, which
 * cost a create more than all its other hashing and encoding together.)
 */
export function docVersion(doc: Y.Doc): string {
  const snap = Y.snapshot(doc);
  const deleted: [number, { clock: number; len: number }[]][] = [...snap.ds.clients];
  return versionOf([...snap.sv], deleted);
}

/**
 * Whether a peer whose state of an object has the state vector `sv` holds
 * every item of the stored state `update`: for each client, the update's
 * structs end at or below the peer's clock. The ends are read from the
 * structs themselves, so items Yjs keeps pending (stored after a gap in
 * their client's clocks) count: a state vector stops at the gap.
 */
export function holdsItemsOf(sv: Uint8Array, update: Uint8Array): boolean {
  const theirs = Y.decodeStateVector(sv);
  for (const [client, end] of Y.parseUpdateMeta(update).to) if ((theirs.get(client) ?? 0) < end) return false;
  return true;
}

/** The version formula stored objects' versions follow; Store.open brings older ones up to it. */
export const VERSION_FORMULA = 2;

/**
 * Both lists sorted by client, so the text is canonical; the delete set's
 * runs are canonical already (Yjs merges adjacent deleted structs into one).
 */
function versionOf(sv: [number, number][], ds: [number, { clock: number; len: number }[]][]): string {
  sv.sort((a, b) => a[0] - b[0]);
  let text = '';
  for (const [c, k] of sv) text += `${c}:${k},`;
  if (ds.length) {
    ds.sort((a, b) => a[0] - b[0]);
    text += '\0';
    for (const [c, runs] of ds) {
      text += `${c}:`;
      for (const r of runs) text += `${r.clock}+${r.len} `;
      text += ',';
    }
  }
  // one-shot hash: createHash().update().digest() cost twice as much per write
  return hash('sha1', text, 'base64url').slice(0, 16);
}

/**
 * The Yjs update that creating an object produces, written directly: the
 * same bytes Yjs writes for a new Y.Doc whose fields are set in one
 * transaction (proved byte for byte in test/yobject.test.ts). Building and
 * discarding a Y.Doc per created object was the largest cost of bulk
 * writes (its transaction, its clientID draw, and the garbage it left).
 */
export function encodeCreate(clientId: number, fields: Readonly<Record<string, FieldValue | null>>, type: string, created: number): { update: Uint8Array; clock: number } {
  const w = writer;
  w.pos = 0;
  const items = createClock(fields);
  w.varUint(1); // one client
  w.varUint(items);
  w.varUint(clientId);
  w.varUint(0); // first clock
  for (const k in fields) {
    const v = fields[k];
    if (v !== null && v !== undefined) w.item(FIELDS, k, v);
  }
  w.item(META, 'type', type);
  // the HLC of the create travels in the state, so every node (clones too) reports the same creation time
  w.item(META, 'created', created);
  w.varUint(0); // empty delete set
  return { update: w.buf.slice(0, w.pos), clock: items };
}

/** How many items a create of these fields writes: one per field set, the type and the creation time. */
function createClock(fields: Readonly<Record<string, FieldValue | null>>): number {
  let items = 2;
  for (const k in fields) if (fields[k] !== null && fields[k] !== undefined) items++;
  return items;
}

/**
 * Writes encodeCreate's bytes into one reused buffer, copied out once at the
 * end: lib0's encoder allocated and joined growing chunks and called
 * TextEncoder per string, which made up most of the 10.6 us a ten-field
 * Person took (profiled); this takes about a third of that.
 */
class CreateWriter {
  buf = new Uint8Array(4096);
  pos = 0;
  private data = new DataView(this.buf.buffer);

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
    this.data = new DataView(bigger.buffer);
  }

  /** lib0 writeVarUint */
  varUint(n: number): void {
    this.room(8);
    while (n > 0x7f) {
      this.buf[this.pos++] = 0x80 | (n & 0x7f);
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }

  /** lib0 writeVarString: a varUint byte length, then UTF-8 */
  string(s: string): void {
    const n = s.length;
    this.room(5 + n * 3);
    let ascii = true;
    for (let i = 0; i < n && ascii; i++) ascii = s.charCodeAt(i) < 0x80;
    if (ascii) {
      this.varUint(n);
      for (let i = 0; i < n; i++) this.buf[this.pos++] = s.charCodeAt(i);
      return;
    }
    const bytes = utf8.encode(s);
    this.varUint(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** lib0 writeAny, for the values a field can hold */
  any(v: FieldValue): void {
    this.room(10);
    if (typeof v === 'string') {
      this.buf[this.pos++] = 119;
      this.string(v);
    } else if (typeof v === 'boolean') {
      this.buf[this.pos++] = v ? 120 : 121;
    } else if (typeof v === 'number') {
      if (Number.isInteger(v) && Math.abs(v) <= 0x7fffffff) {
        this.buf[this.pos++] = 125;
        this.varInt(v);
      } else if (Math.fround(v) === v) {
        this.buf[this.pos++] = 124;
        this.data.setFloat32(this.pos, v, false);
        this.pos += 4;
      } else {
        this.buf[this.pos++] = 123;
        this.data.setFloat64(this.pos, v, false);
        this.pos += 8;
      }
    } else {
      this.buf[this.pos++] = 117;
      this.varUint(v.length);
      for (const one of v) this.any(one);
    }
  }

  /** lib0 writeVarInt: sign in the first byte's second bit */
  private varInt(n: number): void {
    const negative = n < 0 || Object.is(n, -0);
    if (negative) n = -n;
    this.buf[this.pos++] = (n > 0x3f ? 0x80 : 0) | (negative ? 0x40 : 0) | (n & 0x3f);
    n = Math.floor(n / 64);
    while (n > 0) {
      this.buf[this.pos++] = (n > 0x7f ? 0x80 : 0) | (n & 0x7f);
      n = Math.floor(n / 128);
    }
  }

  /** One ContentAny item (ref 8) with a parentSub and no origins: the first item of a map key. */
  item(root: string, key: string, value: FieldValue): void {
    this.room(2);
    this.buf[this.pos++] = 8 | 0b0010_0000;
    this.buf[this.pos++] = 1; // parent is a root type, named
    this.string(root);
    this.string(key);
    this.varUint(1); // one value
    this.any(value);
  }
}

const writer = new CreateWriter();
const utf8 = new TextEncoder();

/**
 * The object's whole Yjs state. A record without `y` holds an object as its
 * create left it, and its state is that create's update, written again from
 * the writer's clientID `w`, the fields in `f`'s order, the type and the
 * creation time (see ObjectRecord.y).
 */
export function recordState(rec: Pick<ObjectRecord, 't' | 'f' | 'c' | 'y' | 'w'>): Uint8Array {
  if (rec.y !== undefined) return rec.y;
  if (rec.w === undefined || rec.c === undefined) throw new Error(`a ${rec.t} record holds neither its state nor the create that made it`);
  return encodeCreate(rec.w, rec.f, rec.t, rec.c).update;
}

/**
 * Whether a record from elsewhere (a peer's clone) holds a state or what
 * recordState needs to rebuild one: a writer and a creation time that are
 * whole numbers, and fields holding only what a create can write (a
 * scalar, or an array of scalars).
 */
export function holdsState(rec: { y?: unknown; w?: unknown; c?: unknown; d?: unknown; f: Readonly<Record<string, unknown>> }): boolean {
  if (rec.y !== undefined) return rec.y instanceof Uint8Array;
  // a create's state never says deleted: a tombstone's record must hold its state
  if (rec.d === true) return false;
  if (!Number.isSafeInteger(rec.w) || (rec.w as number) < 0 || !Number.isSafeInteger(rec.c) || (rec.c as number) < 0) return false;
  const scalar = (v: unknown): boolean => typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
  for (const k in rec.f) {
    const v = rec.f[k];
    if (!scalar(v) && !(Array.isArray(v) && v.every(scalar))) return false;
  }
  return true;
}

/**
 * Whether a record holding these fields may leave out its state. Yjs keeps
 * a -0 (encodeCreate writes it so, as Yjs does), but MessagePack has no -0,
 * so `f` would come back from disk with 0 and rebuild other bytes. The
 * schema writes no -0 (schema.ts scalar); a peer's create made before it
 * did may hold one.
 */
function fieldsRebuildState(fields: Readonly<Record<string, FieldValue>>): boolean {
  for (const k in fields) {
    const v = fields[k];
    if (Object.is(v, -0) || (Array.isArray(v) && v.some((one) => Object.is(one, -0)))) return false;
  }
  return true;
}

/** The state vector of recordState(rec), without rebuilding a create for it: one writer, one clock per item. */
export function recordStateVector(rec: Pick<ObjectRecord, 't' | 'f' | 'c' | 'y' | 'w'>): Uint8Array {
  if (rec.y !== undefined || rec.w === undefined) return Y.encodeStateVectorFromUpdate(recordState(rec));
  return Y.encodeStateVector(new Map([[rec.w, createClock(rec.f)]]));
}

/** Whether `state` is exactly what recordState rebuilds from these, so that a record may leave it out. */
export function isCreateState(state: Uint8Array, writer: number, fields: Readonly<Record<string, FieldValue>>, type: string, created: number): boolean {
  if (!fieldsRebuildState(fields)) return false;
  return Buffer.compare(encodeCreate(writer, fields, type, created).update, state) === 0;
}

/** docVersion of a new document: `clock` items of one client, none deleted. */
export function singleClientVersion(clientId: number, clock: number): string {
  return versionOf([[clientId, clock]], []);
}
