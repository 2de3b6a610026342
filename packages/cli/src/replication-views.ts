import type { PeerStatus } from '@meridian/node';
import { isSeq, isUniqueConflict, isVector, vectorEntry } from '@meridian/store';
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
  /** the changes the digest covers (absent from nodes of builds before it was sent) */
  vector?: Record<string, number>;
  ahead?: [origin: string, originSeq: number][];
}

/** Changes of one origin that one node does not hold yet and another does. */
export interface Lacking {
  nodeId: string;
  origin: string;
  /** how many of that origin's changes, held by some node, this one lacks */
  missing: number;
  /** its vector entry for the origin, and the highest any node holds */
  holds: number;
  newest: number;
}

export interface VerifyResult {
  identical: boolean;
  buckets: number;
  nodes: { url: string; nodeId: string; objects: number }[];
  /** buckets (id ranges by hash) that differ, with each node's object count there */
  differing: { bucket: string; counts: Record<string, number> }[];
  /**
   * When some differ and every node said which changes it holds: what each
   * lacks of the others'. Empty means every node holds the same changes, so
   * the data itself diverged; otherwise replication has not finished.
   */
  lacking?: Lacking[];
  /** how many times every node was digested (more than once with --wait) */
  rounds?: number;
  /** with --wait, when the nodes still differ: the seconds from the first digest to the last */
  waited?: number;
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
  const result: VerifyResult = { identical: differing.length === 0, buckets: width, nodes: digests.map((d) => ({ url: d.url, nodeId: d.nodeId, objects: d.objects })), differing };
  if (!result.identical && digests.every(hasPosition)) result.lacking = lackingChanges(digests);
  return result;
}

function hasPosition<D extends DigestView>(d: D): d is D & Required<Pick<DigestView, 'vector' | 'ahead'>> {
  return isVector(d.vector) && Array.isArray(d.ahead) && d.ahead.every((a) => Array.isArray(a) && typeof a[0] === 'string' && isSeq(a[1]));
}

/**
 * What each node lacks of the changes some node holds, origin by origin. A
 * node holds an origin's changes 1..vector[origin], and those held beyond a
 * gap (`ahead`), so the count is exact without listing every seq.
 */
function lackingChanges(digests: (DigestView & Required<Pick<DigestView, 'vector' | 'ahead'>>)[]): Lacking[] {
  const origins = [...new Set(digests.flatMap((d) => [...Object.keys(d.vector), ...d.ahead.map(([o]) => o)]))].sort();
  const lacking: Lacking[] = [];
  for (const origin of origins) {
    const upTo = Math.max(...digests.map((d) => vectorEntry(d.vector, origin)));
    // the changes of this origin held beyond every node's contiguous run, by anyone
    const beyond = new Set(digests.flatMap((d) => d.ahead.filter(([o, seq]) => o === origin && seq > upTo).map(([, seq]) => seq)));
    for (const d of digests) {
      const holds = vectorEntry(d.vector, origin);
      const aheadHere = new Set(d.ahead.filter(([o]) => o === origin).map(([, seq]) => seq));
      let missing = upTo - holds;
      for (const seq of aheadHere) if (seq > holds && seq <= upTo) missing--;
      for (const seq of beyond) if (!aheadHere.has(seq)) missing++;
      let newest = upTo;
      for (const seq of beyond) newest = Math.max(newest, seq);
      if (missing > 0) lacking.push({ nodeId: d.nodeId, origin, missing, holds, newest });
    }
  }
  return lacking;
}

export function formatVerify(r: VerifyResult): string {
  const head = r.nodes.map((n) => `${n.nodeId} (${n.url}): ${n.objects} objects`).join('\n');
  if (r.identical) return `${head}\nidentical: every id range has the same digest on every node`;
  const lines = r.differing.map((d) => `id range ${d.bucket}: ${Object.entries(d.counts).map(([n, c]) => `${n} ${c}`).join(', ')}`);
  const ranges = `in ${r.differing.length} of ${r.buckets} id ranges (ranges by the first hex digit of sha1(id)):\n${lines.join('\n')}`;
  const waited = r.waited === undefined ? undefined : `still so after waiting ${r.waited} s (${r.rounds} round${r.rounds === 1 ? '' : 's'})`;
  if (r.lacking === undefined) {
    return `${head}\nDIFFER ${ranges}\na node did not say which changes it holds (it runs a build older than this verify): verify again once writes have stopped and every peer is live${waited ? `\n${waited}` : ''}`;
  }
  if (r.lacking.length === 0) {
    return `${head}\nDIVERGED ${ranges}\nevery node holds the same changes, so these ranges should be equal: see "A diverged node found by verify" in docs/operations.md${waited ? `\n${waited}` : ''}`;
  }
  const behind = r.lacking.map((l) => `${l.nodeId} lacks ${l.missing} change${l.missing === 1 ? '' : 's'} from ${l.origin} (it holds ${l.origin} up to ${l.holds}, another node up to ${l.newest})`);
  const next = waited ?? 'verify again once writes have stopped and every peer is live, or wait for it with --wait SECONDS';
  return `${head}\nNOT CONVERGED ${ranges}\nreplication has not finished: the nodes do not hold the same changes yet\n${behind.join('\n')}\n${next}`;
}

/** GET /api/check: what `meridian check` prints. */
export interface CheckView {
  nodeId: string;
  objects: number;
  problems: string[];
}

export function formatCheck(r: CheckView): string {
  const head = `${r.nodeId}: ${r.objects} object${r.objects === 1 ? '' : 's'} checked`;
  if (r.problems.length === 0) return `${head}; its indexes, unique values and counts agree with them`;
  const n = r.problems.length;
  // (a damaged store can have millions: the first thousand say what is wrong, --json has them all)
  const shown = r.problems.slice(0, 1000);
  const more = n > shown.length ? `\n... and ${n - shown.length} more (--json lists them all)` : '';
  return `${head}; ${n} problem${n === 1 ? '' : 's'}:\n${shown.join('\n')}${more}\nlists, lookups and searches on this node may answer wrongly: rebuild it from a clone (see "Checking a node's indexes" in docs/operations.md)`;
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
