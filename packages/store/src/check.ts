import { decode, type ObjectRecord } from './codec.js';
import { isUniqueConflict, uniqueHolderOf, uniqueKeyOf, type ConflictRecord } from './conflicts.js';
import { indexSet } from './indexes.js';
import { keys } from './keys.js';
import type { SnapshotReader, Store } from './store.js';

/** What checkStore found: how many objects it read, and one line per disagreement (none: consistent). */
export interface CheckReport {
  objects: number;
  problems: string[];
}

/** checkStore's problems alone. */
export async function checkIndexes(store: Store): Promise<string[]> {
  return (await checkStore(store)).problems;
}

/**
 * Recomputes every index record, unique-value entry and count from the
 * objects and compares with what is stored, all read as of one moment, so
 * that writes going on meanwhile cannot show as disagreements.
 *
 * A unique value may be held by several objects after replication (each
 * took it on its own node): the index entry names one of them, and each of
 * the others has an open record of the clash, and only they do. An object
 * of a type the schema no longer has is kept as it is, unindexed, when the
 * store has noted its type (meta `untyped`).
 */
export async function checkStore(store: Store): Promise<CheckReport> {
  const snap = store.snapshotReader();
  try {
    return await check(store, snap);
  } finally {
    await snap.close();
  }
}

async function check(store: Store, snap: SnapshotReader): Promise<CheckReport> {
  const wantPlain = new Set<string>();
  const holders = new Map<string, string[]>();
  const problems: string[] = [];
  const counts = new Map<string, number>();
  const untyped = new Set((await snap.meta<string[]>('untyped')) ?? []);
  let objects = 0;
  for await (const [k, v] of snap.raw(keys.objectPrefix)) {
    objects++;
    const id = k.slice(1);
    const rec = decode<ObjectRecord>(v);
    const def = store.schema.types.get(rec.t);
    if (!def) {
      if (!untyped.has(rec.t)) problems.push(`object ${id} has type ${rec.t}, which the schema lacks, and the store has not noted it as kept untyped`);
      continue;
    }
    if (!rec.d) counts.set(rec.t, (counts.get(rec.t) ?? 0) + 1);
    const set = indexSet(def, id, rec.f, rec.d);
    for (const p of set.plain) wantPlain.add(p);
    for (const u of set.unique) {
      const ids = holders.get(u);
      if (ids) ids.push(id);
      else holders.set(u, [id]);
    }
  }
  // unique key -> object with an open record of it -> the holders its records name
  const waiting = new Map<string, Map<string, string[]>>();
  for await (const [, v] of snap.raw('k')) {
    const rec = decode<ConflictRecord>(v);
    if (rec.settled !== undefined || !isUniqueConflict(rec)) continue;
    const u = uniqueKeyOf(rec);
    let ids = waiting.get(u);
    if (!ids) waiting.set(u, (ids = new Map()));
    ids.set(rec.objectId, [...(ids.get(rec.objectId) ?? []), uniqueHolderOf(rec)]);
  }
  for (const prefix of ['t', 'x']) {
    for await (const [k] of snap.raw(prefix)) {
      if (!wantPlain.delete(k)) problems.push(`stale index entry ${printable(k)}`);
    }
  }
  for (const k of wantPlain) problems.push(`missing index entry ${printable(k)}`);
  const entries = new Map<string, string>();
  for await (const [k, v] of snap.raw(keys.uniquePrefix)) entries.set(k, v.toString('utf8'));
  for (const [k, owner] of entries) {
    const ids = holders.get(k);
    if (ids === undefined) problems.push(`stale unique entry ${printable(k)} -> ${owner}`);
    else if (!ids.includes(owner)) problems.push(`unique entry ${printable(k)} names ${owner}, expected one of ${ids.join(', ')}`);
  }
  for (const [k, ids] of holders) {
    const owner = entries.get(k);
    if (owner === undefined) problems.push(`missing unique entry ${printable(k)} -> ${ids.join(', ')}`);
    else if (ids.includes(owner)) {
      for (const id of ids) {
        if (id === owner) continue;
        const named: string[] | undefined = waiting.get(k)?.get(id);
        if (!named) problems.push(`unique value ${printable(k)} is held by both ${owner} and ${id}, and no open conflict records it`);
        else if (!named.includes(owner)) problems.push(`open conflict of unique value ${printable(k)} on ${id} names ${named.join(', ')} as its holder, but the entry names ${owner}`);
      }
      if (waiting.get(k)?.has(owner)) problems.push(`unique entry ${printable(k)} names ${owner}, whose open conflict says another holds the entry`);
    }
  }
  for (const [k, ids] of waiting) {
    for (const id of ids.keys()) if (!holders.get(k)?.includes(id)) problems.push(`open conflict of unique value ${printable(k)} on ${id}, which does not hold it`);
  }
  const stored = (await snap.meta<Record<string, number>>('counts')) ?? {};
  for (const t of new Set([...counts.keys(), ...Object.keys(stored)])) {
    if ((counts.get(t) ?? 0) !== (stored[t] ?? 0)) problems.push(`count of ${t} is ${stored[t] ?? 0}, objects say ${counts.get(t) ?? 0}`);
  }
  return { objects, problems };
}

function printable(k: string): string {
  return JSON.stringify(k.replace(/\u0000/g, '|'));
}
