import * as Y from 'yjs';
import type { FieldValue } from './codec.js';
import { keys, SEP } from './keys.js';
import { fieldHeads, lastItemId, parseItemId, shownItem } from './yobject.js';

/**
 * Concurrent writes to one field on two or more masters resolve the Yjs way
 * (between writes made over the same value, the higher clientID wins); the
 * field then has several open heads, which is recorded as one conflict per
 * field so that an operator can see and settle it. A write made after
 * seeing the conflict settles it (yobject.ts applyLocal), on every node.
 * When the heads change (a further concurrent write, or one written over a
 * single head), the record of the old set is marked settled and one of the
 * new set is made.
 */
export interface ConflictValue {
  /** Yjs item id "client:clock" of the write */
  item: string;
  /** node that made the write, where known */
  node: string | undefined;
  /** the value written (null only in a record from before 2026-11-24 whose write was a removal or had lost its value) */
  value: FieldValue | null;
}

export interface ConflictRecord {
  objectId: string;
  type: string;
  field: string;
  /** the concurrent writes (two or more), ordered by item id; of a unique value held twice, the holder and the other */
  values: ConflictValue[];
  winner: string;
  /** HLC at which this node detected it */
  detected: number;
  /** HLC at which this node saw it settled, or its set of writes change, if it did */
  settled: number | undefined;
}

export function conflictKey(objectId: string, field: string, items: readonly string[]): string {
  return `k${objectId}${SEP}${field}${SEP}${items.join(SEP)}`;
}

interface DetectedConflict {
  field: string;
  /** the field's open heads, ordered by item id; their writers are named when listed (Store.conflicts) */
  values: ConflictValue[];
  winner: string;
}

/**
 * The field's conflict as its state holds it, if it has one: two or more
 * open heads (yobject.ts fieldHeads), which are writes made without
 * having seen each other that no later write settled. It is a function of
 * the state alone, so every node holding the same state, however it came
 * by it (changes in any order, a clone, an anti-entropy merge), finds the
 * same conflict, with the same values and the same winner.
 */
export function fieldConflict(doc: Y.Doc, field: string): DetectedConflict | undefined {
  const heads = fieldHeads(doc, field);
  if (heads.length < 2) return undefined;
  // The winner is the value the field shows: its last item. When that is a removal (no head), the
  // field shows nothing, and writes that lost only to it are no conflict, as a removal is never one
  // side of one; recorded with the last head as winner, the conflict named a value no read shows.
  if (heads.at(-1)!.item !== shownItem(doc, field)) return undefined;
  const winner = lastItemId(heads.at(-1)!.item);
  const values = heads.map((h): ConflictValue => ({ item: lastItemId(h.item), node: undefined, value: h.value }));
  values.sort((a, b) => compareItems(a.item, b.item));
  return { field, values, winner };
}

/** Whether a record is of a unique value held twice, not of concurrent writes. */
export function isUniqueConflict(rec: { values: readonly { item: string }[] }): boolean {
  return rec.values[0]!.item.startsWith('unique:');
}

/**
 * The record of unique value `value` (folded) of `field` held by `objectId`
 * while `holder` holds its index entry; `node` is where `objectId`'s value
 * came from, when known. Its key names the value, as an object may hold
 * several values of a multi-valued field that another holds too.
 */
export function uniqueClash(objectId: string, type: string, field: string, value: string, holder: string, node: string | undefined, detected: number): { key: string; rec: ConflictRecord } {
  const items = [`unique:${holder}`, `unique:${objectId}`];
  return {
    key: conflictKey(objectId, field, [...items, value]),
    rec: {
      objectId,
      type,
      field,
      values: [
        { item: items[0]!, node: undefined, value },
        { item: items[1]!, node, value },
      ],
      winner: items[0]!,
      detected,
      settled: undefined,
    },
  };
}

/**
 * The unique-index key a record of a unique value held twice is about: both
 * its values are the case-folded value as the index stores it.
 */
export function uniqueKeyOf(rec: Pick<ConflictRecord, 'type' | 'field' | 'values'>): string {
  return keys.unique(rec.type, rec.field, String(rec.values[0]!.value));
}

/** The object a record of a unique value held twice names as the index entry's holder. */
export function uniqueHolderOf(rec: Pick<ConflictRecord, 'winner'>): string {
  return rec.winner.slice('unique:'.length);
}

function compareItems(a: string, b: string): number {
  const x = parseItemId(a)!;
  const y = parseItemId(b)!;
  return x.client - y.client || x.clock - y.clock;
}
