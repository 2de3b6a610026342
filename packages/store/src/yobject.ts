import { hash } from 'node:crypto';
import * as Y from 'yjs';
import * as encoding from 'lib0/encoding';
import type { FieldValue } from './codec.js';

/**
 * One object is one Y.Doc (guid = object id): a Y.Map "f" of fields and a
 * Y.Map "m" of metadata (type, deleted). A multi-valued field is one list
 * value, so concurrent edits of a field resolve as one last-writer-wins choice
 * per field, which is what conflicts are recorded against.
 */
const FIELDS = 'f';
const META = 'm';

export function newDoc(id: string, clientId: number): Y.Doc {
  const doc = new Y.Doc({ guid: id, gc: true });
  doc.clientID = clientId;
  return doc;
}

export function docFromState(id: string, state: Uint8Array, clientId: number): Y.Doc {
  const doc = new Y.Doc({ guid: id, gc: true });
  Y.applyUpdate(doc, state);
  // Set after loading: Yjs replaces a doc's clientID with a random one when
  // a non-local transaction carries items of that clientID, which loading
  // our own earlier changes does.
  doc.clientID = clientId;
  return doc;
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
      for (const [k, v] of Object.entries(fields)) {
        if (v === null) {
          if (f.has(k)) {
            f.delete(k);
            changed.push(k);
          }
        } else if (!sameValue(f.get(k), v)) {
          f.set(k, Array.isArray(v) ? [...v] : v);
          changed.push(k);
        }
      }
      if (meta.type !== undefined && m.get('type') !== meta.type) m.set('type', meta.type);
      if (meta.deleted !== undefined && (m.get('deleted') === true) !== meta.deleted) m.set('deleted', meta.deleted);
      if (meta.created !== undefined && !m.has('created')) m.set('created', meta.created);
    });
  } finally {
    doc.off('update', capture);
  }
  return { update, changed };
}

export function fieldsMap(doc: Y.Doc): Y.Map<unknown> {
  return doc.getMap<unknown>(FIELDS);
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
 * The object's version: a digest of its state vector with clients sorted, so
 * two nodes holding the same merged state report the same version (the XML
 * gateway's strong ETag) whatever order they received the changes in.
 */
export function docVersion(doc: Y.Doc, fields: Readonly<Record<string, FieldValue>> = readFields(doc), deleted = readMeta(doc).deleted): string {
  const sv = Y.decodeStateVector(Y.encodeStateVector(doc));
  return versionOf(sv, fields, deleted);
}

/**
 * The state vector alone does not change when a field is removed (a Yjs
 * deletion adds no item), so the version also covers the visible content:
 * fields in key order and the deleted flag.
 */
function versionOf(sv: Map<number, number>, fields: Readonly<Record<string, FieldValue>>, deleted: boolean): string {
  const clients = [...sv.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([c, k]) => `${c}:${k}`)
    .join(',');
  const content = JSON.stringify(
    Object.keys(fields)
      .sort()
      .map((k) => [k, fields[k]]),
  );
  // one-shot hash: createHash().update().digest() cost twice as much per write
  return hash('sha1', `${clients}\0${content}${deleted ? '\0d' : '\0'}`, 'base64url').slice(0, 16);
}

/**
 * The Yjs update that creating an object produces, written directly: the
 * same bytes Yjs writes for a new Y.Doc whose fields are set in one
 * transaction (proved byte for byte in test/yobject.test.ts). Building and
 * discarding a Y.Doc per created object was the largest cost of bulk
 * writes (its transaction, its clientID draw, and the garbage it left).
 */
export function encodeCreate(clientId: number, fields: Readonly<Record<string, FieldValue | null>>, type: string, created: number): { update: Uint8Array; clock: number } {
  const e = encoding.createEncoder();
  const items: [string, string, unknown][] = [];
  for (const [k, v] of Object.entries(fields)) if (v !== null) items.push([FIELDS, k, Array.isArray(v) ? [...v] : v]);
  items.push([META, 'type', type]);
  // the HLC of the create travels in the state, so every node (clones too) reports the same creation time
  items.push([META, 'created', created]);
  encoding.writeVarUint(e, 1); // one client
  encoding.writeVarUint(e, items.length);
  encoding.writeVarUint(e, clientId);
  encoding.writeVarUint(e, 0); // first clock
  for (const [root, key, value] of items) {
    // ContentAny (ref 8) with a parentSub, no origins: the first item of a map key
    encoding.writeUint8(e, 8 | 0b0010_0000);
    encoding.writeVarUint(e, 1); // parent is a root type, named
    encoding.writeVarString(e, root);
    encoding.writeVarString(e, key);
    encoding.writeVarUint(e, 1); // one value
    encoding.writeAny(e, value as encoding.AnyEncodable);
  }
  encoding.writeVarUint(e, 0); // empty delete set
  return { update: encoding.toUint8Array(e), clock: items.length };
}

/** docVersion of a new document: `clock` items of one client, these fields, not deleted. */
export function singleClientVersion(clientId: number, clock: number, fields: Readonly<Record<string, FieldValue>>): string {
  return versionOf(new Map([[clientId, clock]]), fields, false);
}
