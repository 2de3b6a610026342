// One Meridian node in a process of its own, for replication.bench.js (not a
// benchmark itself: run.js only picks up *.bench.js). Started with fork();
// argv[2] is the JSON of the node's config flags. It talks to the parent over
// the IPC channel:
//
//   -> { t: 'loaded' }                                 modules loaded; the node is not started yet
//   <- { t: 'start' }                                  start it (so a timed start excludes process start-up)
//   -> { t: 'ready', url, nodeId }                     once listening
//   -> { t: 'arrived', at, entries: [[origin, originSeq, id], ...] }
//        for each durable batch while recording; `at` is process.hrtime in
//        ns (CLOCK_MONOTONIC, the same clock in every process on the machine)
//   -> { t: 'visible', at, vector }
//        while recording, each time more changes become readable (the
//        store's visible version vector; a remote change is readable once
//        applied, before this node's fsync)
//   <- { t: 'record', on }                             start / stop reporting arrivals
//   <- { t: 'status', id }  -> { t: 'status', id, vector, feedBase, lastSeq, counts, peers, sockets }
//   <- { t: 'reach', id, origin, seq }  -> { t: 'reached', id, at }
//        once this node durably holds origin's changes up to seq (see reach below)
//   <- { t: 'versions', id, ids }  -> { t: 'versions', id, versions }   each object's version, null if absent
//   -> { t: 'failed', id, error }                      instead of the answer, when a request failed
//   <- { t: 'stop' }        -> { t: 'stopped' }, then the process exits
import { MeridianNode, resolveConfig } from '@meridian/node';
import { pino } from 'pino';

const flags = JSON.parse(process.argv[2]);
let node;
let recording = false;
let shown = {};
/** the highest origin seq of each origin durably in the feed here, and when it got there */
const durable = new Map();

process.on('message', async (m) => {
  try {
    if (m.t === 'start') await start();
    else if (m.t === 'record') recording = m.on;
    else if (m.t === 'status') {
      const s = node.store;
      process.send({ t: 'status', id: m.id, vector: s.versionVector(), feedBase: s.feedBase(), lastSeq: s.lastSeq, counts: s.objectCounts(), peers: node.replicator.status(), sockets: socketBytes(node) });
    } else if (m.t === 'reach') {
      const at = await reach(node.store, m.origin, m.seq);
      process.send({ t: 'reached', id: m.id, at: at.toString() });
    } else if (m.t === 'versions') {
      const versions = await Promise.all(m.ids.map(async (id) => (await node.store.get(id))?.version ?? null));
      process.send({ t: 'versions', id: m.id, versions });
    } else if (m.t === 'stop') {
      await node?.stop();
      process.send({ t: 'stopped' }, () => process.exit(0));
    }
  } catch (e) {
    // the parent waits for an answer: it gets the error instead, and this process stays up to be stopped
    process.send({ t: 'failed', id: m.id, error: e instanceof Error ? e.stack ?? e.message : String(e) });
  }
});
process.on('disconnect', () => (node ? node.stop() : Promise.resolve()).finally(() => process.exit(0)));
process.send({ t: 'loaded' });

async function start() {
  node = await MeridianNode.start(resolveConfig({ flags }), pino({ level: 'warn' }, pino.destination(2)));
  node.store.subscribe((entries) => {
    const at = process.hrtime.bigint();
    for (const e of entries) if (e.originSeq > (durable.get(e.origin)?.seq ?? 0)) durable.set(e.origin, { seq: e.originSeq, at });
  });
  node.store.subscribe((entries) => {
    if (!recording) return;
    const at = process.hrtime.bigint().toString();
    process.send({ t: 'arrived', at, entries: entries.map((e) => [e.origin, e.originSeq, e.id]) });
  });
  node.store.onVisible(() => {
    if (!recording) return;
    const vector = node.store.visibleVersionVector();
    if (Object.entries(vector).every(([o, n]) => (shown[o] ?? 0) >= n)) return;
    shown = vector;
    process.send({ t: 'visible', at: process.hrtime.bigint().toString(), vector });
  });
  process.send({ t: 'ready', url: node.url, nodeId: node.store.nodeId });
}

/**
 * process.hrtime (ns) at which `store` durably holds `origin`'s changes up to
 * `seq`. Changes from the feed: the subscribe listener runs after each batch
 * is on disk (the version vector moves when a change is queued, before it is
 * durable). A clone by object states adds no feed entries; its vector and
 * feed base are raised once every state is on disk, so those are polled,
 * every millisecond. A target reached before it was asked for answers with
 * the time it was reached.
 */
function reach(store, origin, seq, timeoutMs = 600_000) {
  const already = durable.get(origin);
  if (already && already.seq >= seq) return Promise.resolve(already.at);
  return new Promise((resolve, reject) => {
    const done = (at, err) => {
      clearInterval(poll);
      clearTimeout(timer);
      unsub();
      if (err) reject(err);
      else resolve(at);
    };
    const timer = setTimeout(() => done(undefined, new Error(`timed out after ${timeoutMs / 1000} s waiting for ${origin}:${seq}; the vector here is ${JSON.stringify(store.versionVector())}`)), timeoutMs);
    const unsub = store.subscribe((entries) => {
      const at = process.hrtime.bigint();
      for (const e of entries) if (e.origin === origin && e.originSeq >= seq) return done(at);
    });
    const poll = setInterval(() => {
      if ((store.versionVector()[origin] ?? 0) >= seq && (store.feedBase()[origin] ?? 0) >= seq) done(process.hrtime.bigint());
    }, 1);
  });
}

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
