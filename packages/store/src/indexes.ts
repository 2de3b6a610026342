import type { FieldValue } from './codec.js';
import { keys } from './keys.js';
import { foldValue, type TypeDef } from './schema.js';

/**
 * The index records an object contributes, as a pure function of its state,
 * so a change writes exactly the difference between the old and new sets and
 * a checker can recompute them from the objects alone. Tombstones contribute
 * nothing: a deleted object frees its uid and mail.
 */
export interface IndexSet {
  /** type and field index keys, stored with an empty value */
  plain: Set<string>;
  /** unique index keys, stored with the owner's id */
  unique: Set<string>;
}

export function indexSet(type: TypeDef, id: string, fields: Readonly<Record<string, FieldValue>>, deleted: boolean): IndexSet {
  const plain = new Set<string>();
  const unique = new Set<string>();
  if (deleted) return { plain, unique };
  plain.add(keys.type(type.name, id));
  for (const f of type.fields.values()) {
    if (!f.unique && !f.indexed) continue;
    const v = fields[f.name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      const folded = foldValue(f, one);
      if (f.unique) unique.add(keys.unique(type.name, f.name, folded));
      else plain.add(keys.field(type.name, f.name, folded, id));
    }
  }
  return { plain, unique };
}

export const EMPTY_INDEX: IndexSet = { plain: new Set(), unique: new Set() };
