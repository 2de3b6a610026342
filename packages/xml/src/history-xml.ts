import { hlcToIso, type FieldValue, type ObjectHistory, type ObjectVersion } from '@meridian/store';
import { escapeAttr, escapeText } from './format.js';

/**
 * An object's history as XML (docs/formats/xml.md, "History"): one
 * <version> per change, oldest first, each with the fields it altered, old
 * and new values repeated per value as <field> repeats them. Password
 * fields show only that they changed.
 */
export function historyXml(h: ObjectHistory & { hidden?: boolean }, type: string): string {
  let out = `<history type="${escapeAttr(type)}" id="${escapeAttr(h.id)}" complete="${h.truncated || h.hidden ? 'false' : 'true'}" first-seq="${h.firstSeq}">\n`;
  // (one note: the schema allows one)
  const notes: string[] = [];
  if (h.truncated) notes.push(`Changes before feed position ${h.firstSeq} are past this node's feed retention, or were never in its feed (it was cloned); the oldest version shown is not the first.`);
  if (h.hidden) notes.push('Versions from while the object was outside what you may read are left out, and so are the values it held then.');
  if (notes.length) out += `  <note>${escapeText(notes.join(' '))}</note>\n`;
  for (const v of h.versions) {
    out += `  <version name="${escapeAttr(v.version)}" seq="${v.seq}" time="${hlcToIso(v.hlc)}" origin="${escapeAttr(v.origin)}" principal="${escapeAttr(v.principal)}" kind="${v.kind}"${v.deleted ? ' deleted="true"' : ''}>\n`;
    for (const c of v.changes) {
      if (c.secret) {
        out += `    <field name="${escapeAttr(c.field)}" secret="true"/>\n`;
        continue;
      }
      out += `    <field name="${escapeAttr(c.field)}">\n${values('old', c.old)}${values('new', c.new)}    </field>\n`;
    }
    out += '  </version>\n';
  }
  return `${out}</history>\n`;
}

function values(tag: 'old' | 'new', v: FieldValue | undefined): string {
  if (v === undefined) return '';
  return (Array.isArray(v) ? v : [v]).map((one) => `      <${tag}>${escapeText(String(one))}</${tag}>\n`).join('');
}

/**
 * The history as someone who does not see everything may read it: only
 * versions after which the object was theirs to read, and none of the old
 * values of a version that brought it into their reach (a contact moved
 * from another customer keeps its history, which is that customer's).
 * `readable` judges the object's fields as they were at a feed position.
 */
export function readableHistory(h: ObjectHistory, readable: (fields: Record<string, FieldValue>, at: number) => boolean): ObjectHistory & { hidden: boolean } {
  const versions: ObjectVersion[] = [];
  let hidden = false;
  for (const v of h.versions) {
    if (!readable(v.fields, v.seq)) {
      hidden = true;
      continue;
    }
    // (a create has no old values; one whose record was pieced together from a later change might)
    if (v.kind !== 'create' && readable(fieldsBefore(v), v.seq - 1)) {
      versions.push(v);
      continue;
    }
    if (v.kind !== 'create') hidden = true;
    // only what the change set: not even the names of the fields it removed
    versions.push({ ...v, changes: v.changes.filter((c) => c.secret || c.new !== undefined).map(({ old: _old, ...c }) => c) });
  }
  return { ...h, versions, hidden };
}

/** The object's fields before a version's change: its fields, with those the change altered as they were. */
export function fieldsBefore(v: ObjectVersion): Record<string, FieldValue> {
  const before: Record<string, FieldValue> = { ...v.fields };
  for (const c of v.changes) {
    if (c.secret) continue;
    if (c.old === undefined) delete before[c.field];
    else before[c.field] = c.old;
  }
  return before;
}
