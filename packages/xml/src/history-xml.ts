import { hlcToIso, type FieldValue, type ObjectHistory } from '@meridian/store';
import { escapeAttr, escapeText } from './format.js';

/**
 * An object's history as XML (docs/formats/xml.md, "History"): one
 * <version> per change, oldest first, each with the fields it altered, old
 * and new values repeated per value as <field> repeats them. Password
 * fields show only that they changed.
 */
export function historyXml(h: ObjectHistory, type: string): string {
  let out = `<history type="${escapeAttr(type)}" id="${escapeAttr(h.id)}" complete="${h.truncated ? 'false' : 'true'}" first-seq="${h.firstSeq}">\n`;
  if (h.truncated) {
    out += `  <note>${escapeText(`Changes before feed position ${h.firstSeq} are past this node's feed retention, or were never in its feed (it was cloned); the oldest version shown is not the first.`)}</note>\n`;
  }
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
