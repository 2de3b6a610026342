import { decode, type ObjectRecord } from './codec.js';
import { indexSet } from './indexes.js';
import { keys } from './keys.js';
import type { Store } from './store.js';

/**
 * Recomputes every index record from the objects and compares with what is
 * stored. Returns one line per disagreement; empty means consistent.
 */
export async function checkIndexes(store: Store): Promise<string[]> {
  const wantPlain = new Set<string>();
  const wantUnique = new Map<string, string>();
  const problems: string[] = [];
  const counts = new Map<string, number>();
  for await (const [k, v] of store.raw(keys.objectPrefix)) {
    const id = k.slice(1);
    const rec = decode<ObjectRecord>(v);
    const def = store.schema.types.get(rec.t);
    if (!def) {
      problems.push(`object ${id} has unknown type ${rec.t}`);
      continue;
    }
    if (!rec.d) counts.set(rec.t, (counts.get(rec.t) ?? 0) + 1);
    const set = indexSet(def, id, rec.f, rec.d);
    for (const p of set.plain) wantPlain.add(p);
    for (const u of set.unique) {
      const other = wantUnique.get(u);
      if (other !== undefined) problems.push(`unique value ${printable(u)} is held by both ${other} and ${id}`);
      wantUnique.set(u, id);
    }
  }
  for (const prefix of ['t', 'x']) {
    for await (const [k] of store.raw(prefix)) {
      if (!wantPlain.delete(k)) problems.push(`stale index entry ${printable(k)}`);
    }
  }
  for (const k of wantPlain) problems.push(`missing index entry ${printable(k)}`);
  for await (const [k, v] of store.raw(keys.uniquePrefix)) {
    const owner = v.toString('utf8');
    const want = wantUnique.get(k);
    if (want === undefined) problems.push(`stale unique entry ${printable(k)} -> ${owner}`);
    else if (want !== owner) problems.push(`unique entry ${printable(k)} names ${owner}, expected ${want}`);
    wantUnique.delete(k);
  }
  for (const [k, id] of wantUnique) problems.push(`missing unique entry ${printable(k)} -> ${id}`);
  const stored = store.objectCounts();
  for (const t of new Set([...counts.keys(), ...Object.keys(stored)])) {
    if ((counts.get(t) ?? 0) !== (stored[t] ?? 0)) problems.push(`count of ${t} is ${stored[t] ?? 0}, objects say ${counts.get(t) ?? 0}`);
  }
  return problems;
}

function printable(k: string): string {
  return JSON.stringify(k.replace(/\u0000/g, '|'));
}
