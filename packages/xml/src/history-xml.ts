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
 */
export function readableHistory(h: ObjectHistory, readable: (fields: ObjectVersion['fields']) => boolean): ObjectHistory & { hidden: boolean } {
  const versions: ObjectVersion[] = [];
  let hidden = false;
  for (const v of h.versions) {
    if (!readable(v.fields)) {
      hidden = true;
      continue;
    }
    // the object as it was before this change: its fields, with the altered ones as they were
    const before: Record<string, FieldValue> = { ...v.fields };
    for (const c of v.changes) {
      if (c.secret) continue;
      if (c.old === undefined) delete before[c.field];
      else before[c.field] = c.old;
    }
    if (v.kind === 'create' || readable(before)) versions.push(v);
    else {
      hidden = true;
      versions.push({ ...v, changes: v.changes.map(({ old: _old, ...c }) => c) });
    }
  }
  return { ...h, versions, hidden };
}
