import * as Y from 'yjs';
import type { FieldValue } from './codec.js';
import { SEP } from './keys.js';

/**
 * Concurrent writes to one field on two masters resolve the Yjs way (the
 * higher clientID wins); each such overwrite is recorded so that an operator
 * can see and settle it. The record is built only from the two Yjs items
 * involved, so every node that receives both writes records the same
 * conflict, whatever order they arrived in.
 */
export interface ConflictValue {
  /** Yjs item id "client:clock" of the write */
  item: string;
  /** node that made the write, where known */
  node: string | undefined;
  /** the value written; null for a removal */
  value: FieldValue | null;
}

export interface ConflictRecord {
  objectId: string;
  type: string;
  field: string;
  /** the two concurrent writes, ordered by item id */
  values: [ConflictValue, ConflictValue];
  winner: string;
  /** HLC at which this node detected it */
  detected: number;
  /** HLC of the later write to the field that settled it, if any */
  settled: number | undefined;
}

export function conflictKey(objectId: string, field: string, items: [string, string]): string {
  return `k${objectId}${SEP}${field}${SEP}${items[0]}${SEP}${items[1]}`;
}


const itemId = (id: Y.ID): string => `${id.client}:${id.clock}`;

interface Visible {
  id: Y.ID;
  value: FieldValue | null;
}

/** The field items visible before a remote update is applied. */
export function snapshotFieldItems(map: Y.Map<unknown>): Map<string, Visible> {
  const out = new Map<string, Visible>();
  for (const [key, item] of map._map) {
    out.set(key, { id: item.id, value: item.deleted ? null : (item.content.getContent().at(-1) as FieldValue) });
  }
  return out;
}

export interface DetectedConflict {
  field: string;
  values: [ConflictValue, ConflictValue];
  winner: string;
}

/**
 * Called in `afterTransaction` of a remote apply, while overwritten items
 * still hold their content. A field conflicts when the newest incoming item
 * for it does not descend (through Yjs origins) from the item that was
 * visible here before: the remote writer had not seen our value.
 */
export function detectConflicts(
  doc: Y.Doc,
  map: Y.Map<unknown>,
  tr: Y.Transaction,
  before: Map<string, Visible>,
  nodeOfClient: (client: number) => string | undefined,
): DetectedConflict[] {
  const out: DetectedConflict[] = [];
  for (const key of tr.changed.get(map as unknown as Y.AbstractType<Y.YEvent<Y.Map<unknown>>>) ?? []) {
    if (key === null) continue;
    const prior = before.get(key);
    if (!prior || prior.value === null) continue;
    let incoming: Y.Item | null = null;
    for (let it: Y.Item | null = map._map.get(key) ?? null; it; it = it.left) {
      if (it.id.clock >= (tr.beforeState.get(it.id.client) ?? 0)) {
        incoming = it;
        break;
      }
    }
    if (!incoming || descends(doc, incoming, prior.id)) continue;
    const current = map._map.get(key)!;
    const remoteValue = incoming.deleted && incoming.content.getLength() === 0 ? null : (incoming.content.getContent().at(-1) as FieldValue);
    const a: ConflictValue = { item: itemId(prior.id), node: nodeOfClient(prior.id.client), value: prior.value };
    const b: ConflictValue = { item: itemId(incoming.id), node: nodeOfClient(incoming.id.client), value: remoteValue };
    const values: [ConflictValue, ConflictValue] = compareItems(a.item, b.item) < 0 ? [a, b] : [b, a];
    out.push({ field: key, values, winner: itemId(current.id) });
  }
  return out;
}

function descends(doc: Y.Doc, item: Y.Item, ancestor: Y.ID): boolean {
  let origin = item.origin;
  for (let hops = 0; origin && hops < 100_000; hops++) {
    if (origin.client === ancestor.client && origin.clock === ancestor.clock) return true;
    const next = Y.getItem(doc.store, origin);
    origin = next instanceof Y.Item ? next.origin : null;
  }
  return false;
}

function compareItems(a: string, b: string): number {
  const [ac, ak] = a.split(':').map(Number) as [number, number];
  const [bc, bk] = b.split(':').map(Number) as [number, number];
  return ac - bc || ak - bk;
}
