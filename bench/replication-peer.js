// One Meridian node in a process of its own, for replication.bench.js (not a
// benchmark itself: run.js only picks up *.bench.js). Started with fork()
// (Processes.fork in lib.js); argv[2] is the JSON of the node's config
// flags. It talks to the parent over the IPC channel:
//
//   -> { t: 'loaded' }                                 modules loaded; the node is not started yet
//   <- { t: 'start', id }  -> { t: 'ready', id, url, nodeId }
//        starts the node (so a timed start excludes process start-up); answers once it listens
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
//   <- { t: 'stop' }                                   stops the node; the process exits
import { MeridianNode, resolveConfig } from '@meridian/node';
import { pino } from 'pino';
import { socketBytes } from './lib.js';

const flags = JSON.parse(process.argv[2]);
let node;
let recording = false;
let shown = {};
/** the highest origin seq of each origin durably in the feed here, and when it got there */
const durable = new Map();
/** reach() calls waiting for the feed */
const waiters = new Set();

process.on('message', async (m) => {
  try {
    if (m.t === 'start') {
      await start();
      process.send({ t: 'ready', id: m.id, url: node.url, nodeId: node.store.nodeId });
    } else if (m.t === 'record') recording = m.on;
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
      process.exit(0);
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
    for (const w of waiters) if ((durable.get(w.origin)?.seq ?? 0) >= w.seq) w.done(durable.get(w.origin).at);
    if (!recording) return;
    process.send({ t: 'arrived', at: at.toString(), entries: entries.map((e) => [e.origin, e.originSeq, e.id]) });
  });
  node.store.onVisible(() => {
    if (!recording) return;
    const vector = node.store.visibleVersionVector();
    if (Object.entries(vector).every(([o, n]) => (shown[o] ?? 0) >= n)) return;
    shown = vector;
    process.send({ t: 'visible', at: process.hrtime.bigint().toString(), vector });
  });
}

/**
 * process.hrtime (ns) at which `store` durably holds `origin`'s changes up to
 * `seq`. Changes from the feed: the subscribe listener above runs after each
 * batch is on disk (the version vector moves when a change is queued, before
 * it is durable), and a target it saw before it was asked for answers with
 * the time it saw it. A clone by object states adds no feed entries; its
 * vector and feed base are raised once every state is on disk, so those are
 * polled, every millisecond, and the answer is the time of the poll.
 */
function reach(store, origin, seq, timeoutMs = 600_000) {
  const already = durable.get(origin);
  if (already && already.seq >= seq) return Promise.resolve(already.at);
  return new Promise((resolve, reject) => {
    const w = { origin, seq };
    const end = (at, err) => {
      waiters.delete(w);
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(at);
    };
    w.done = (at) => end(at);
    waiters.add(w);
    const timer = setTimeout(() => end(undefined, new Error(`timed out after ${timeoutMs / 1000} s waiting for ${origin}:${seq}; the vector here is ${JSON.stringify(store.versionVector())}`)), timeoutMs);
    const poll = setInterval(() => {
      if ((store.versionVector()[origin] ?? 0) >= seq && (store.feedBase()[origin] ?? 0) >= seq) end(process.hrtime.bigint());
    }, 1);
  });
}
