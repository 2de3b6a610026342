import type { PeerStatus } from '@meridian/node';
import { isUniqueConflict } from '@meridian/store';
import { CliError } from './client.js';

/** Output of the replication commands: peers, conflicts, verify. */
export type PeerView = PeerStatus;

/** How far behind, either way: lag (their changes not applied here) or behind (ours they lack). */
export function distance(entries: number, seconds: number): string {
  return `${entries} entries / ${seconds.toFixed(1)} s`;
}

export function formatPeers(peers: PeerView[]): string {
  if (peers.length === 0) return 'no peers configured';
  const rows = peers.map((p) => [
    p.node ?? '?',
    p.url ?? `(${p.direction})`,
    p.state + (p.reason && p.state !== 'live' ? ` (${p.reason})` : ''),
    distance(p.lagEntries, p.lagSeconds),
    distance(p.peerBehind, p.peerBehindSeconds),
    p.lastContact ?? 'never',
    `${p.bytesIn} in / ${p.bytesOut} out`,
  ]);
  // lag: the peer's changes not yet applied here; behind: ours the peer has not acknowledged
  return table(['peer', 'url', 'state', 'lag', 'behind', 'last contact', 'bytes'], rows);
}

export interface ConflictView {
  objectId: string;
  type: string;
  field: string;
  values: { item: string; node: string | null; value: unknown; secret?: boolean }[];
  winner: string;
  detected: string;
  settled: string | null;
}

export function formatConflicts(items: ConflictView[], settledToo = false): string {
  if (items.length === 0) return settledToo ? 'no conflicts' : 'no open conflicts';
  return items
    .map((c) => {
      const settled = c.settled ? ` (settled ${c.settled})` : '';
      const [holder, other] = c.values;
      // a unique value held by two objects, not concurrent writes: the "winner" holds the index entry
      if (holder && other && isUniqueConflict(c)) {
        const from = other.node ? `; arrived from ${other.node}` : '';
        const who = holder.item.slice('unique:'.length);
        const held = c.settled ? `was also held by ${who}` : `is also held by ${who}, which lookups find`;
        return `${c.type} ${c.objectId} field ${c.field}: value ${JSON.stringify(other.value)} ${held}${from}${settled}`;
      }
      const vals = c.values.map((v) => `${v.item === c.winner ? 'kept' : 'lost'}: ${v.secret ? 'a password (not shown)' : JSON.stringify(v.value)} from ${v.node ?? 'unknown node'}`).join('; ');
      return `${c.type} ${c.objectId} field ${c.field}: ${vals}${settled}`;
    })
    .join('\n');
}

export interface DigestView {
  nodeId: string;
  lastSeq: number;
  objects: number;
  buckets: { count: number; hash: string }[];
}

export interface VerifyResult {
  identical: boolean;
  buckets: number;
  nodes: { url: string; nodeId: string; objects: number }[];
  /** buckets (id ranges by hash) that differ, with each node's object count there */
  differing: { bucket: string; counts: Record<string, number> }[];
}

export function compareDigests(digests: (DigestView & { url: string })[]): VerifyResult {
  const differing: VerifyResult['differing'] = [];
  const width = digests[0]!.buckets.length;
  // (a node of another Meridian version, or not a Meridian node: comparing bucket by bucket would mean nothing)
  for (const d of digests) {
    const ok = Array.isArray(d.buckets) && d.buckets.length === width && d.buckets.every((b) => typeof b?.hash === 'string' && typeof b.count === 'number');
    if (!ok) throw new CliError(`${d.url} answered a digest of ${Array.isArray(d.buckets) ? d.buckets.length : 'no'} id ranges where ${digests[0]!.url} answered ${width}; verify nodes that run the same Meridian version`);
  }
  for (let b = 0; b < width; b++) {
    const hashes = new Set(digests.map((d) => d.buckets[b]!.hash));
    if (hashes.size > 1) {
      differing.push({ bucket: b.toString(16), counts: Object.fromEntries(digests.map((d) => [d.nodeId, d.buckets[b]!.count])) });
    }
  }
  return { identical: differing.length === 0, buckets: width, nodes: digests.map((d) => ({ url: d.url, nodeId: d.nodeId, objects: d.objects })), differing };
}

export function formatVerify(r: VerifyResult): string {
  const head = r.nodes.map((n) => `${n.nodeId} (${n.url}): ${n.objects} objects`).join('\n');
  if (r.identical) return `${head}\nidentical: every id range has the same digest on every node`;
  const lines = r.differing.map((d) => `id range ${d.bucket}: ${Object.entries(d.counts).map(([n, c]) => `${n} ${c}`).join(', ')}`);
  return `${head}\nDIVERGED in ${r.differing.length} of ${r.buckets} id ranges (ranges by the first hex digit of sha1(id)):\n${lines.join('\n')}`;
}

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatLag(nodeId: string, mode: string, peers: PeerView[]): string {
  const head = `${nodeId} (${mode}) at ${new Date().toISOString()}`;
  if (peers.length === 0) return `${head}\nno peers configured`;
  const rows = peers.map((p) => [p.node ?? '?', p.state, String(p.lagEntries), p.lagSeconds.toFixed(1), String(p.peerBehind), p.peerBehindSeconds.toFixed(1), p.lastContact ?? 'never']);
  return `${head}\n${table(['peer', 'state', 'lag (entries)', 'lag (s)', 'peer behind (entries)', 'peer behind (s)', 'last contact'], rows)}`;
}

export interface FeedView {
  seq: number;
  origin: string;
  originSeq: number;
  id: string;
  type: string;
  kind: string;
  time: string;
  principal: string;
  fields: string[];
}

export function formatFeedEntry(e: FeedView): string {
  return `${String(e.seq).padStart(6)}  ${e.time}  ${e.origin}#${e.originSeq}  ${e.principal}  ${e.kind} ${e.type} ${e.id}${e.fields.length ? `  ${e.fields.join(', ')}` : ''}`;
}
