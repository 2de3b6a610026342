import type { ObjectJson, StatusJson } from '@meridian/node';
import { distance } from './replication-views.js';

/** Human-readable output. `--json` bypasses all of this. */
export type ObjectView = ObjectJson;

function value(v: unknown): string {
  return Array.isArray(v) ? v.map(String).join(', ') : String(v);
}

export function formatObject(o: ObjectView): string {
  const names = Object.keys(o.fields).sort();
  const width = Math.max(8, ...names.map((n) => n.length));
  const lines = [`${o.type} ${o.id}${o.deleted ? ' (deleted)' : ''}`, `  ${'version'.padEnd(width)}  ${o.version}`, `  ${'modified'.padEnd(width)}  ${o.modified}`];
  for (const n of names) lines.push(`  ${n.padEnd(width)}  ${value(o.fields[n])}`);
  return lines.join('\n');
}

/** The field that best names an object in a one-line listing. */
function label(o: ObjectView): string {
  for (const k of ['cn', 'name', 'hostname', 'version']) if (o.fields[k] !== undefined) return value(o.fields[k]);
  return '';
}

export function formatList(items: ObjectView[]): string {
  if (items.length === 0) return '(none)';
  const width = Math.max(...items.map((o) => o.id.length));
  return items.map((o) => `${o.id.padEnd(width)}  ${label(o)}`).join('\n');
}

/** What `/status` answers (docs/operations.md documents it as stable JSON). */
export type StatusView = StatusJson;

export function formatStatus(s: StatusView): string {
  const types = Object.entries(s.objectsByType)
    .sort()
    .map(([t, n]) => `${t} ${n}`)
    .join(', ');
  return [
    `node      ${s.nodeId} (${s.role})`,
    `mode      ${s.mode}${s.modeSince ? ` since ${s.modeSince}` : ''}`,
    ...(s.modeReason ? [`          ${s.modeReason}`] : []),
    ...(s.role === 'replica' ? [`master    ${s.master ? `${s.master.node ?? '?'} (${s.master.url})${s.mode === 'read-only' ? ', lost' : ''}` : 'none reached yet'}`] : []),
    `version   ${s.version}, up ${s.uptimeSeconds}s`,
    `objects   ${s.objects}${types ? ` (${types})` : ''}`,
    `feed      seq ${s.feed.lastSeq}${s.feed.lastChange ? `, last change ${s.feed.lastChange}` : ''}`,
    `vector    ${Object.entries(s.versionVector).map(([n, v]) => `${n}=${v}`).join(' ') || '(empty)'}`,
    `conflicts ${s.conflicts.open} open`,
    `peers     ${s.peers.length === 0 ? 'none configured' : ''}`,
    ...s.peers.map(
      (p) =>
        `  ${p.node ?? p.url}: ${p.state}${p.reason && p.state !== 'live' ? ` (${p.reason})` : ''}, lag ${distance(p.lagEntries, p.lagSeconds)}, behind ${distance(p.peerBehind, p.peerBehindSeconds)}, last contact ${p.lastContact ?? 'never'}`,
    ),
  ].join('\n').replace(/peers     \n/, 'peers\n');
}
