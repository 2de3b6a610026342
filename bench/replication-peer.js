// One Meridian node in a process of its own, for replication.bench.js (not a
// benchmark itself: run.js only picks up *.bench.js). Started with fork();
// argv[2] is the JSON of the node's config flags. It talks to the parent over
// the IPC channel:
//
//   -> { t: 'ready', url, nodeId }                     once listening
//   -> { t: 'arrived', at, entries: [[origin, originSeq, id], ...] }
//        for each durable batch while recording; `at` is process.hrtime in
//        ns (CLOCK_MONOTONIC, the same clock in every process on the machine)
//   -> { t: 'visible', at, vector }
//        while recording, each time more changes become readable (the
//        store's visible version vector; a remote change is readable once
//        applied, before this node's fsync)
//   <- { t: 'record', on }                             start / stop reporting arrivals
//   <- { t: 'status', id }  -> { t: 'status', id, vector, lastSeq, peers, sockets }
//   <- { t: 'stop' }        -> { t: 'stopped' }, then the process exits
import { MeridianNode, resolveConfig } from '@meridian/node';
import { pino } from 'pino';

const flags = JSON.parse(process.argv[2]);
const node = await MeridianNode.start(resolveConfig({ flags }), pino({ level: 'warn' }, pino.destination(2)));
let recording = false;
node.store.subscribe((entries) => {
  if (!recording) return;
  const at = process.hrtime.bigint().toString();
  process.send({ t: 'arrived', at, entries: entries.map((e) => [e.origin, e.originSeq, e.id]) });
});
let shown = {};
node.store.onVisible(() => {
  if (!recording) return;
  const vector = node.store.visibleVersionVector();
  if (Object.entries(vector).every(([o, n]) => (shown[o] ?? 0) >= n)) return;
  shown = vector;
  process.send({ t: 'visible', at: process.hrtime.bigint().toString(), vector });
});
process.on('message', async (m) => {
  if (m.t === 'record') recording = m.on;
  else if (m.t === 'status') {
    process.send({ t: 'status', id: m.id, vector: node.store.versionVector(), lastSeq: node.store.lastSeq, peers: node.replicator.status(), sockets: socketBytes(node) });
  } else if (m.t === 'stop') {
    await node.stop();
    process.send({ t: 'stopped' }, () => process.exit(0));
  }
});
process.on('disconnect', () => node.stop().finally(() => process.exit(0)));
process.send({ t: 'ready', url: node.url, nodeId: node.store.nodeId });

/** Bytes through each replication link's TCP socket (WebSocket framing included), by peer node id. */
function socketBytes(n) {
  // `links` is private to Replicator; read here, for measurement only
  const out = {};
  for (const l of n.replicator?.links ?? []) {
    const s = l.ws?._socket;
    if (l.session?.peer && s) out[l.session.peer] = { written: s.bytesWritten, read: s.bytesRead };
  }
  return out;
}
