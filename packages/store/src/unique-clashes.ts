import type { Level } from 'level';
import { decode, encode, type ObjectRecord } from './codec.js';
import { isUniqueConflict, uniqueClash, uniqueKeyOf, type ConflictRecord } from './conflicts.js';
import type { BatchOp } from './group-commit.js';
import { indexSet } from './indexes.js';
import { keys } from './keys.js';
import type { Schema } from './schema.js';

/**
 * Brings the open records of unique values held twice in line with the
 * objects, at open, before the store relies on them to pass an index entry
 * on (Store.releaseClaim). Builds before the hand-off left records open on
 * objects since deleted, or merged away from the value, and a schema change
 * may have made the field not unique; the entry may name an object no
 * longer holding the value while a recorded one still does. Reads only the
 * objects of open records, which are few. Settles such records in `open`
 * and returns the records and entries to write.
 */
export async function repairUniqueClashes(db: Level<string, Buffer>, schema: Schema, open: Map<string, Map<string, ConflictRecord>>, hlc: number): Promise<BatchOp[]> {
  const byValue = new Map<string, [string, ConflictRecord][]>();
  for (const recs of open.values()) {
    for (const [k, rec] of recs) {
      if (!isUniqueConflict(rec)) continue;
      const u = uniqueKeyOf(rec);
      const list = byValue.get(u);
      if (list) list.push([k, rec]);
      else byValue.set(u, [[k, rec]]);
    }
  }
  if (byValue.size === 0) return [];
  const held = new Map<string, Set<string>>();
  const holds = async (id: string, u: string): Promise<boolean> => {
    let set = held.get(id);
    if (!set) {
      const buf = await db.get(keys.object(id));
      const rec = buf === undefined ? undefined : decode<ObjectRecord>(buf);
      const def = rec && schema.types.get(rec.t);
      set = rec && def ? indexSet(def, id, rec.f, rec.d).unique : new Set<string>();
      held.set(id, set);
    }
    return set.has(u);
  };
  const ops: BatchOp[] = [];
  const settle = (k: string, rec: ConflictRecord): void => {
    rec.settled = hlc;
    const recs = open.get(rec.objectId)!;
    recs.delete(k);
    if (recs.size === 0) open.delete(rec.objectId);
    ops.push({ type: 'put', key: k, value: encode(rec) });
  };
  for (const [u, list] of byValue) {
    const entry = await db.get(u);
    let owner = entry === undefined ? undefined : entry.toString('utf8');
    const waiting: [string, ConflictRecord][] = [];
    for (const [k, rec] of list) {
      if (rec.objectId === owner || !(await holds(rec.objectId, u))) settle(k, rec);
      else waiting.push([k, rec]);
    }
    if (waiting.length === 0 || (owner !== undefined && (await holds(owner, u)))) continue;
    // as Store.releaseClaim passes it on
    owner = waiting.map(([, rec]) => rec.objectId).sort()[0]!;
    ops.push({ type: 'put', key: u, value: Buffer.from(owner) });
    for (const [k, rec] of waiting) {
      settle(k, rec);
      if (rec.objectId === owner) continue;
      const clash = uniqueClash(rec.objectId, rec.type, rec.field, String(rec.values[0]!.value), owner, rec.values[1]!.node, hlc);
      let recs = open.get(rec.objectId);
      if (!recs) open.set(rec.objectId, (recs = new Map()));
      recs.set(clash.key, clash.rec);
      ops.push({ type: 'put', key: clash.key, value: encode(clash.rec) });
    }
  }
  return ops;
}
