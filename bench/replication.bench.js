// Replication between Meridian masters, side by side with PouchDB 9
// (`PouchDB.replicate` between two local LevelDB databases holding the same
// objects), in one run:
//
//   1. catch-up: peer B was offline while master A took one single-field
//      update on each of its objects; B restarts on the same dir. Updates/s
//      from B's restart until B holds the last of them durably.
//      PouchDB: db1 -> db2 after the same updates on db1.
//   2. clone: a brand-new node C joins A (A's objects of (1), updated once,
//      plus as many new ones). Objects/s until C holds them all; whether C
//      was cloned by object states or by replaying A's feed is printed.
//      PouchDB: db1 (the same docs) -> an empty db3.
//   3. push latency: three masters, all peered; one takes single-field
//      updates at a fixed rate; from each write's acknowledgement on the
//      writer to the change being readable on each other node (the target:
//      what store.get returns; a remote change is readable once applied,
//      before the receiver's fsync), and to it being durable there.
//      The two receiving nodes run in child processes (bench/replication-peer.js)
//      so each node has its own event loop, as in a deployment.
//   4. bytes on the wire per change during (3): the writer's replication
//      sockets (WebSocket framing included) and its protocol frames.
//
// The sending node A of (1) and (2) and the PouchDB databases live in this
// process; the receiving nodes B and C run in child processes, as every node
// of a deployment runs in its own. --profile CPU-profiles the receiver of (1)
// and (2) through its inspector. `--phase sync` runs (1) and (2) alone,
// `--phase push` (3) and (4).
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import PouchDB from 'pouchdb';
import { pino } from 'pino';
import { MeridianNode, resolveConfig } from '@meridian/node';
import { encodeFrame } from '@meridian/sync';
import { concurrent, fmt, freePort, percentile, printTable, Processes, profiledRemote, sleep, socketBytes, tempDirs, until } from './lib.js';

export const name = 'replication';
/** run.js --phase: `sync` is (1) and (2), which share their setup; `push` is (3) and (4) */
export const PHASES = ['sync', 'push'];

const WRITERS = 64;
const SECRET = 'bench-cluster-secret-0123';
const ADMIN_PASSWORD = 'bench-admin-password';
const PEER_SCRIPT = fileURLToPath(new URL('./replication-peer.js', import.meta.url));
// longer than the peer's own 600 s limit on 'reach', so that its answer, naming what it lacks, comes first
const ASK_TIMEOUT = 660_000;
/** CLOCK_MONOTONIC in ms: comparable across processes on one machine, unlike performance.now(). */
const nowMs = () => hrMs(process.hrtime.bigint());

export async function run({ quick, profile, outDir, log, phases = new Set(PHASES) }) {
  const nObjects = quick ? 2_000 : 100_000; // (1) objects on A, each updated once
  const nClone = quick ? 2_000 : 200_000; // (2) objects on A when C joins
  const rate = 1_000; // (3) writes/s on the writer
  const seconds = quick ? 1 : 10;

  const logger = pino({ level: 'warn' }, pino.destination(2));
  const { fresh, removeAll } = tempDirs();
  const running = new Set();
  const pouches = new Set();
  const procs = new Processes();
  const start = async (dir, peers = []) => {
    const node = await MeridianNode.start(resolveConfig({ flags: nodeFlags(dir, peers) }), logger);
    running.add(node);
    return node;
  };
  const stop = async (node) => {
    running.delete(node);
    await node.stop();
  };
  const pouch = (label) => {
    // PouchDB keeps its LevelDB in the directory named by the database name
    const db = new PouchDB(join(fresh(label), 'db'));
    pouches.add(db);
    return db;
  };
  const fields = (i) => ({ name: `Customer ${i}`, kind: 'customer' });
  const change = (i, rev) => ({ description: `revision ${rev} of customer ${i}` });

  try {
    log(`Organisation objects {name, kind} (about 40 bytes of JSON); each update sets one field, "description" (about 30 bytes)`);
    log(`nodes: A and the PouchDB databases in this process, B and C each in a child process; heartbeat 1000 ms, link timeout 5000 ms; setup writes with ${WRITERS} concurrent writers`);

    /** Runs `phase` (which returns its seconds); with --profile, profiles the child inspected on `port` meanwhile, into `file`. */
    const timed = (port, file, phase) => (profile ? profiledRemote(port, join(outDir, file), phase) : phase().then((result) => ({ result, top: undefined })));

    let sync; // (1) and (2)
    if (phases.has('sync')) {
      // ---- 1. catch-up -----------------------------------------------------
      const a = await start(fresh('a'));
      const aId = a.store.nodeId;
      const ids = [];
      let t = await concurrent(nObjects, WRITERS, async (i) => {
        ids[i] = (await a.store.create('Organisation', fields(i))).id;
      });
      log(`\nsetup: ${fmt(nObjects)} creates on A in ${fmt(t, 1)} s`);

      // B clones A's creates before it goes offline (a clone without history; shown for reference)
      const bDir = fresh('b');
      let b = await childNode(procs, bDir, [syncUrl(a)]);
      let t0 = await b.start();
      const bClone = (await b.reach(aId, a.store.versionVector()[aId])) - t0;
      await until('A and B live', async () => allLive(a.replicator.status()) && allLive((await b.status()).peers));
      log(`setup: B (new) cloned A's ${fmt(nObjects)} creates in ${fmt(bClone / 1000, 1)} s; B stops`);
      await b.stop();

      t = await concurrent(nObjects, WRITERS, (i) => a.store.update(ids[i], change(i, 2)));
      const aTarget = a.store.versionVector()[aId];
      log(`setup: ${fmt(nObjects)} single-field updates on A in ${fmt(t, 1)} s while B is offline`);

      let bStarted;
      const bInspect = profile ? await freePort() : undefined;
      b = await childNode(procs, bDir, [syncUrl(a)], { inspectPort: bInspect });
      const catchUp = async () => {
        const t0 = await b.start();
        bStarted = nowMs() - t0;
        const done = await b.reach(aId, aTarget);
        return (done - t0) / 1000;
      };
      const { result: mCatchSecs, top: catchTop } = await timed(bInspect, `${name}-catchup.cpuprofile`, catchUp);
      const bPeer = (await b.status()).peers.find((p) => p.node === aId);
      await checkSame(a.store, b, ids, 'B after catch-up');
      await b.stop();

      const p1 = pouch('p1');
      const p2 = pouch('p2');
      const revs = await pouchWrite(p1, ids.map((id, i) => ({ _id: id, ...fields(i) })));
      t0 = nowMs();
      const pInitial = await PouchDB.replicate(p1, p2);
      const pCloneSmall = (nowMs() - t0) / 1000;
      await pouchWrite(p1, ids.map((id, i) => ({ _id: id, _rev: revs[i], ...fields(i), ...change(i, 2) })));
      t0 = nowMs();
      const pCatch = await PouchDB.replicate(p1, p2);
      const pCatchSecs = (nowMs() - t0) / 1000;
      if (pInitial.docs_written !== nObjects || pCatch.docs_written !== nObjects) {
        throw new Error(`PouchDB wrote ${pInitial.docs_written} and ${pCatch.docs_written} docs, expected ${nObjects} each`);
      }
      await p2.close();
      pouches.delete(p2);

      const mCatch = nObjects / mCatchSecs;
      const pCatchRate = nObjects / pCatchSecs;
      log('');
      log(`1. catch-up: ${fmt(nObjects)} single-field updates (one per object) made while the peer was offline`);
      printTable(
        [
          ['', 'updates/s', 'seconds', 'note'],
          ['meridian B restart -> durable', fmt(mCatch), fmt(mCatchSecs, 2), `node start ${fmt(bStarted, 0)} ms; ${fmt(bPeer.bytesIn / nObjects, 0)} bytes in per update`],
          ['pouchdb replicate db1 -> db2', fmt(pCatchRate), fmt(pCatchSecs, 2), `docs_written ${fmt(pCatch.docs_written)}`],
          ['ratio meridian/pouch', `${fmt(mCatch / pCatchRate, 2)}x`, '', ''],
        ],
        log,
      );
      log(`   (for reference, clones of ${fmt(nObjects)} objects without history: meridian ${fmt(nObjects / (bClone / 1000))}/s, pouchdb ${fmt(nObjects / pCloneSmall)}/s)`);
      if (catchTop) printTop(log, catchTop, join(outDir, `${name}-catchup.cpuprofile`));

      // ---- 2. clone ----------------------------------------------------------
      const more = nClone - nObjects;
      t = await concurrent(more, WRITERS, async (i) => {
        ids[nObjects + i] = (await a.store.create('Organisation', fields(nObjects + i))).id;
      });
      const aHead = a.store.lastSeq;
      const cloneTarget = a.store.versionVector()[aId];
      log(`\nsetup: ${fmt(more)} more creates on A in ${fmt(t, 1)} s: A holds ${fmt(nClone)} objects, ${fmt(aHead)} feed entries`);
      const cInspect = profile ? await freePort() : undefined;
      const c = await childNode(procs, fresh('c'), [syncUrl(a)], { inspectPort: cInspect });
      const clone = async () => {
        const t0 = await c.start();
        const done = await c.reach(aId, cloneTarget);
        return (done - t0) / 1000;
      };
      const { result: mCloneSecs, top: cloneTop } = await timed(cInspect, `${name}-clone.cpuprofile`, clone);
      const cStatus = await c.status();
      const cObjects = cStatus.counts.Organisation ?? 0;
      if (cObjects !== nClone) throw new Error(`C holds ${cObjects} Organisations, expected ${nClone}`);
      const cPeer = cStatus.peers.find((p) => p.node === aId);
      // how C was cloned: object states (its feed base covers A's changes) or A's feed replayed
      const byStates = (cStatus.feedBase[aId] ?? 0) >= cloneTarget;
      const cloneHow = byStates ? `by object states, C's feed holds ${fmt(cStatus.lastSeq)} entries` : `by replaying A's feed: ${fmt(aHead / mCloneSecs)} entries/s`;
      await checkSame(a.store, c, ids, 'C after clone');
      await c.stop();
      await stop(a);

      const newRevs = await pouchWrite(p1, ids.slice(nObjects).map((id, i) => ({ _id: id, ...fields(nObjects + i) })));
      if (newRevs.length !== more) throw new Error('PouchDB setup wrote too few docs');
      const p3 = pouch('p3');
      t0 = nowMs();
      const pClone = await PouchDB.replicate(p1, p3);
      const pCloneSecs = (nowMs() - t0) / 1000;
      if (pClone.docs_written !== nClone) throw new Error(`PouchDB clone wrote ${pClone.docs_written} docs, expected ${nClone}`);
      for (const db of [p1, p3]) {
        await db.close();
        pouches.delete(db);
      }

      const mClone = nClone / mCloneSecs;
      const pCloneRate = nClone / pCloneSecs;
      log('');
      log(`2. clone: a new, empty node joins; the source holds ${fmt(nClone)} objects, ${fmt(nObjects)} of them updated once (${fmt(aHead)} feed entries)`);
      printTable(
        [
          ['', 'objects/s', 'seconds', 'note'],
          ['meridian C start -> durable', fmt(mClone), fmt(mCloneSecs, 2), `${cloneHow}; ${fmt(cPeer.bytesIn / nClone, 0)} bytes in per object`],
          ['pouchdb replicate db1 -> empty', fmt(pCloneRate), fmt(pCloneSecs, 2), `docs_written ${fmt(pClone.docs_written)}`],
          ['ratio meridian/pouch', `${fmt(mClone / pCloneRate, 2)}x`, '', ''],
        ],
        log,
      );
      if (cloneTop) printTop(log, cloneTop, join(outDir, `${name}-clone.cpuprofile`));

      sync = {
        metrics: {
          objects: { catchUpObjects: nObjects, cloneObjects: nClone, cloneFeedEntries: aHead },
          catchUp: {
            meridianUpdatesPerSec: mCatch,
            meridianSecs: mCatchSecs,
            meridianNodeStartMs: bStarted,
            meridianBytesInPerUpdate: bPeer.bytesIn / nObjects,
            pouchUpdatesPerSec: pCatchRate,
            pouchSecs: pCatchSecs,
            ratio: mCatch / pCatchRate,
            profileTop: catchTop,
          },
          cloneWithoutHistory: { objects: nObjects, meridianPerSec: nObjects / (bClone / 1000), pouchPerSec: nObjects / pCloneSmall },
          clone: {
            meridianObjectsPerSec: mClone,
            meridianMethod: byStates ? 'object states' : 'feed replay',
            meridianEntriesPerSec: aHead / mCloneSecs,
            meridianSecs: mCloneSecs,
            meridianBytesInPerObject: cPeer.bytesIn / nClone,
            pouchObjectsPerSec: pCloneRate,
            pouchSecs: pCloneSecs,
            ratio: mClone / pCloneRate,
            profileTop: cloneTop,
          },
        },
        checks: [
          { name: 'catch-up meridian / pouchdb', measured: mCatch / pCatchRate, target: '>= 10x', pass: mCatch / pCatchRate >= 10, shown: `${fmt(mCatch / pCatchRate, 2)}x (${fmt(mCatch)}/s)` },
          { name: `clone objects/s (${fmt(nClone)})`, measured: mClone, target: '>= 100,000', pass: mClone >= 100_000, shown: fmt(mClone) },
          { name: 'clone meridian / pouchdb', measured: mClone / pCloneRate, target: '>= 20x', pass: mClone / pCloneRate >= 20, shown: `${fmt(mClone / pCloneRate, 2)}x` },
        ],
      };
    }
    if (!phases.has('push')) return sync;

    // ---- 3 and 4. push latency and bytes per change --------------------------
    const push = await pushLatency({ rate, seconds, fresh, start, stop, procs, log });
    log('');
    log(`3. push latency: ${fmt(rate)} single-field updates/s for ${seconds} s on W (this process); X and Y are child processes; all three peered`);
    log(`   from the write's acknowledgement on W to the change being readable on the receiver (the target), and durable there (ms); achieved ${fmt(push.achievedRate)} writes/s, writer's own ack p50 ${fmt(push.ack.p50, 2)} ms`);
    printTable(
      [
        ['receiver', 'p50', 'p90', 'p99', 'max', 'changes'],
        ...push.readable.receivers.map((r) => [`${r.label} readable`, fmt(r.p50, 2), fmt(r.p90, 2), fmt(r.p99, 2), fmt(r.max, 2), fmt(r.count)]),
        ['both readable', fmt(push.readable.all.p50, 2), fmt(push.readable.all.p90, 2), fmt(push.readable.all.p99, 2), fmt(push.readable.all.max, 2), fmt(push.readable.all.count)],
        ...push.receivers.map((r) => [`${r.label} durable`, fmt(r.p50, 2), fmt(r.p90, 2), fmt(r.p99, 2), fmt(r.max, 2), fmt(r.count)]),
        ['both durable', fmt(push.all.p50, 2), fmt(push.all.p90, 2), fmt(push.all.p99, 2), fmt(push.all.max, 2), fmt(push.all.count)],
      ],
      log,
    );
    log('   readable: what store.get (every gateway) returns; a remote change is readable once applied, before the receiver\'s fsync (it is on disk at its origin)');
    log('');
    log(`4. bytes per change during (3): ${fmt(push.changes)} changes from W to each peer`);
    printTable(
      [
        ['link', 'socket bytes/change', 'frame bytes/change', 'note'],
        ...push.bytes.map((r) => [r.link, fmt(r.socket, 1), fmt(r.frames, 1), r.note]),
      ],
      log,
    );
    log(`   socket = TCP payload written (WebSocket headers and pings included); frame = the protocol's msgpack frames (status bytesOut)`);
    const an = push.anatomy;
    log(`   one change inside a changes frame: ${an.perChange} bytes (Yjs update ${an.yjsUpdate}); each frame adds ${an.frameEnvelope}, each ack frame is ${an.ack}`);
    log(`   per key, key included: ${Object.entries(an.fields).map(([k, v]) => `${k} ${v}`).join(', ')}`);

    const writerSocket = (push.bytes[0].socket + push.bytes[1].socket) / 2;
    return {
      metrics: {
        ...sync?.metrics,
        pushLatencyMs: { rate, seconds, achievedRate: push.achievedRate, writerAck: push.ack, receivers: push.receivers, all: push.all, readable: push.readable },
        bytesPerChange: push.bytes,
        changeAnatomy: push.anatomy,
      },
      checks: [
        ...(sync?.checks ?? []),
        { name: 'push latency to readable, p50 (ms)', measured: push.readable.all.p50, target: '<= 5', pass: push.readable.all.p50 <= 5, shown: `${fmt(push.readable.all.p50, 2)} (durable ${fmt(push.all.p50, 2)})` },
        { name: 'push latency to readable, p99 (ms)', measured: push.readable.all.p99, target: '<= 20', pass: push.readable.all.p99 <= 20, shown: `${fmt(push.readable.all.p99, 2)} (durable ${fmt(push.all.p99, 2)})` },
        { name: 'wire bytes per change (W -> peer)', measured: writerSocket, target: '<= 120', pass: writerSocket <= 120, shown: fmt(writerSocket, 1) },
      ],
    };
  } finally {
    // their data dirs go below: only once nothing writes into them
    await procs.killAll();
    for (const node of running) await node.stop().catch(() => undefined);
    for (const db of pouches) await db.close().catch(() => undefined);
    removeAll();
  }
}

/**
 * Three masters: W here, X and Y in child processes, each peered with the
 * other two. W takes `rate` single-field updates per second for `seconds`;
 * each write's acknowledgement time on W is compared with the time the change
 * becomes readable on X and on Y (the target), and with the time it shows
 * up in their durable feeds.
 */
async function pushLatency({ rate, seconds, fresh, start, stop, procs, log }) {
  const n = rate * seconds;
  const warm = Math.min(500, n);
  const w = await start(fresh('w'));
  const wId = w.store.nodeId;
  const x = await childNode(procs, fresh('x'), [syncUrl(w)]);
  await x.start();
  const y = await childNode(procs, fresh('y'), [syncUrl(w), x.url]);
  await y.start();
  const receivers = [
    { label: 'X', node: x },
    { label: 'Y', node: y },
  ];
  try {
    const ids = [];
    await concurrent(n + warm, WRITERS, async (i) => {
      ids[i] = (await w.store.create('Organisation', { name: `Live customer ${i}`, kind: 'customer' })).id;
    });
    const head = w.store.versionVector()[wId];
    await until('X and Y to hold the objects and all links to be live', async () => {
      if (!allLive(w.replicator.status(), 2)) return false;
      for (const r of receivers) {
        const s = await r.node.status();
        if ((s.vector[wId] ?? 0) < head || !allLive(s.peers, 2)) return false;
      }
      return true;
    });
    log(`\nsetup: W holds ${fmt(n + warm)} objects, cloned by X and Y`);

    // The receivers report the durable arrival of W's changes; the first arrival counts (direct or relayed).
    const arrivals = receivers.map(() => new Map());
    receivers.forEach((r, k) =>
      r.node.onArrival((at, entries) => {
        for (const [origin, originSeq, id] of entries) {
          const key = `${id}:${originSeq}`;
          if (origin === wId && !arrivals[k].has(key)) arrivals[k].set(key, at);
        }
      }),
    );
    // ... and when W's changes become readable there: [time, W's origin seq now readable], in order
    const readable = receivers.map(() => []);
    receivers.forEach((r, k) =>
      r.node.onVisible((at, vector) => {
        const n = vector[wId] ?? 0;
        const list = readable[k];
        if (!list.length || n > list[list.length - 1][1]) list.push([at, n]);
      }),
    );
    const originOf = new Map();
    const unsub = w.store.subscribe((entries) => {
      for (const e of entries) if (e.origin === wId) originOf.set(e.seq, e.originSeq);
    });
    for (const r of receivers) await r.node.record(true);

    const writeRun = async (from, count) => {
      const acked = new Float64Array(count);
      const issued = new Float64Array(count);
      const keys = new Array(count);
      const secs = await paced(count, rate, async (i) => {
        const id = ids[from + i];
        issued[i] = nowMs();
        const o = await w.store.update(id, { description: `live revision ${from + i}` });
        acked[i] = nowMs();
        keys[i] = [id, o.seq];
      });
      // all acknowledged; wait until both receivers hold every change
      await until(
        'X and Y to receive every change',
        () => arrivals.every((m) => m.size >= count),
        30_000,
      );
      return { secs, acked, issued, keys: keys.map(([id, seq]) => `${id}:${originOf.get(seq)}`), originSeqs: keys.map(([, seq]) => originOf.get(seq)) };
    };

    // warm-up, then the measured run with the byte counters read around it
    await writeRun(n, warm);
    arrivals.forEach((m) => m.clear());
    readable.forEach((l) => (l.length = 0));
    await sleep(200);
    const before = await wireSnapshot(w, receivers);
    const run = await writeRun(0, n);
    const after = await wireSnapshot(w, receivers);
    unsub();
    for (const r of receivers) await r.node.record(false);

    const stats = (xs) => ({ p50: percentile(xs, 50), p90: percentile(xs, 90), p99: percentile(xs, 99), max: Math.max(...xs), mean: xs.reduce((s, v) => s + v, 0) / xs.length, count: xs.length });
    const all = [];
    const per = receivers.map((r, k) => {
      const lat = run.keys.map((key, i) => {
        const at = arrivals[k].get(key);
        if (at === undefined) throw new Error(`${r.label} never received ${key}`);
        return at - run.acked[i];
      });
      all.push(...lat);
      return { label: r.label, ...stats(lat) };
    });
    const ack = stats(Array.from(run.acked, (v, i) => v - run.issued[i]));
    // readable: the first report whose vector covers the change (binary search over increasing seqs)
    const allReadable = [];
    const perReadable = receivers.map((r, k) => {
      const list = readable[k];
      const lat = run.originSeqs.map((seq, i) => {
        let lo = 0;
        let hi = list.length - 1;
        if (hi < 0 || list[hi][1] < seq) throw new Error(`${r.label} never reported origin seq ${seq} of W readable`);
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (list[mid][1] >= seq) hi = mid;
          else lo = mid + 1;
        }
        return list[lo][0] - run.acked[i];
      });
      allReadable.push(...lat);
      return { label: r.label, ...stats(lat) };
    });

    // bytes: W's link to each receiver, and the link between the receivers (which relays W's changes)
    const xId = x.nodeId;
    const yId = y.nodeId;
    const d = (k, peer, dir) => after[k].sockets[peer][dir] - before[k].sockets[peer][dir];
    const f = (k, peer, dir) => after[k].peers.find((p) => p.node === peer)[dir] - before[k].peers.find((p) => p.node === peer)[dir];
    for (const [k, peers] of [['w', [xId, yId]], ['x', [wId, yId]], ['y', [wId, xId]]]) {
      for (const p of peers) if (d(k, p, 'written') < 0) throw new Error(`the ${k} -> ${p} link reconnected during the run; its byte counts are not usable`);
    }
    const bytes = [
      { link: 'W -> X', socket: d('w', xId, 'written') / n, frames: f('w', xId, 'bytesOut') / n, note: 'changes frames + acks of X\'s own frames' },
      { link: 'W -> Y', socket: d('w', yId, 'written') / n, frames: f('w', yId, 'bytesOut') / n, note: 'changes frames + acks of Y\'s own frames' },
      { link: 'X -> W', socket: d('x', wId, 'written') / n, frames: f('x', wId, 'bytesOut') / n, note: 'acks + X\'s feed (W\'s changes, filtered out)' },
      { link: 'Y -> W', socket: d('y', wId, 'written') / n, frames: f('y', wId, 'bytesOut') / n, note: 'acks + Y\'s feed (W\'s changes, filtered out)' },
      { link: 'X -> Y', socket: d('x', yId, 'written') / n, frames: f('x', yId, 'bytesOut') / n, note: 'X relays W\'s changes to Y' },
      { link: 'Y -> X', socket: d('y', xId, 'written') / n, frames: f('y', xId, 'bytesOut') / n, note: 'Y relays W\'s changes to X' },
    ];
    // What one change weighs in the protocol: the last change of the run, encoded as the sender does
    const [last] = await w.store.readFeed(w.store.lastSeq - 1, 1);
    const wire = { o: last.origin, n: last.originSeq, i: last.id, y: last.type, k: last.kind, u: last.update, h: last.hlc, p: last.principal, c: last.fields };
    const frameOf = (k) => encodeFrame({ t: 'changes', changes: Array(k).fill(wire), last: last.seq, head: last.seq }).length;
    const anatomy = {
      perChange: frameOf(2) - frameOf(1),
      frameEnvelope: 2 * frameOf(1) - frameOf(2),
      yjsUpdate: last.update.length,
      ack: encodeFrame({ t: 'ack', seq: last.seq }).length,
      fields: Object.fromEntries(Object.entries(wire).map(([k, v]) => [k, encodeFrame({ t: 'head', head: 0, [k]: v }).length - encodeFrame({ t: 'head', head: 0 }).length])),
    };
    const total = bytes.reduce((s, r) => s + r.socket, 0);
    bytes.push({ link: 'all six', socket: total, frames: bytes.reduce((s, r) => s + r.frames, 0), note: 'every byte between the three nodes per change' });
    return { changes: n, achievedRate: n / run.secs, ack, receivers: per, all: stats(all), readable: { receivers: perReadable, all: stats(allReadable) }, bytes, anatomy };
  } finally {
    for (const r of receivers) await r.node.stop();
    await stop(w);
  }
}

/** Byte counters of every replication link of the three nodes. */
async function wireSnapshot(w, receivers) {
  const [x, y] = await Promise.all(receivers.map((r) => r.node.status()));
  return { w: { peers: w.replicator.status(), sockets: socketBytes(w) }, x, y };
}

/**
 * A node in a child process (bench/replication-peer.js), driven over IPC.
 * The process loads its modules first; `start()` then starts the node and
 * returns the CLOCK_MONOTONIC time (ms) at which it asked, so a timed start
 * counts the node's start (store open included) but not Node's own.
 * `inspectPort` opens the inspector, for profiledRemote.
 */
async function childNode(procs, dir, peers, { inspectPort } = {}) {
  const p = await procs.fork(PEER_SCRIPT, [JSON.stringify(nodeFlags(dir, peers))], { execArgv: inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : [] });
  const { child } = p;
  let onArrival = () => undefined;
  let onVisible = () => undefined;
  const waiting = new Map();
  let nextId = 0;
  /** a request the peer answers, or fails, by its id; a peer that stalls fails it after ASK_TIMEOUT */
  const ask = (m) =>
    new Promise((resolve, reject) => {
      if (!child.connected) return reject(new Error('the peer process is gone'));
      const id = nextId++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error(`the peer did not answer "${m.t}" within ${ASK_TIMEOUT / 1000} s`));
      }, ASK_TIMEOUT);
      const settle = (fn) => (v) => {
        clearTimeout(timer);
        fn(v);
      };
      waiting.set(id, { resolve: settle(resolve), reject: settle(reject) });
      child.send({ ...m, id });
    });
  child.on('exit', (code, signal) => {
    for (const w of waiting.values()) w.reject(new Error(`peer process exited (${code ?? signal}) before it answered`));
    waiting.clear();
  });
  child.on('message', (m) => {
    if (m.t === 'arrived') onArrival(hrMs(m.at), m.entries);
    else if (m.t === 'visible') onVisible(hrMs(m.at), m.vector);
    else if (m.id !== undefined) {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.t === 'failed') w?.reject(new Error(`peer process: ${m.error}`));
      else w?.resolve(m);
    }
  });
  const handle = {
    nodeId: undefined,
    url: undefined,
    /** starts the node; resolves to the time (nowMs) it was asked to, once it listens */
    start: async () => {
      const t0 = nowMs();
      const { url, nodeId } = await ask({ t: 'start' });
      handle.nodeId = nodeId;
      handle.url = `${url.replace(/^http/, 'ws')}/sync`;
      return t0;
    },
    onArrival: (fn) => {
      onArrival = fn;
    },
    onVisible: (fn) => {
      onVisible = fn;
    },
    record: (on) => new Promise((resolve) => child.send({ t: 'record', on }, resolve)),
    status: () => ask({ t: 'status' }),
    /** the time (nowMs) at which the node durably held origin's changes up to seq */
    reach: async (origin, seq) => hrMs((await ask({ t: 'reach', origin, seq })).at),
    versions: async (ids) => (await ask({ t: 'versions', ids })).versions,
    stop: async () => {
      if (child.connected) child.send({ t: 'stop' });
      await Promise.race([p.exited, sleep(10_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await p.exited;
    },
  };
  return handle;
}

/** process.hrtime in ns (a decimal string from a peer, or a bigint) as ms: nowMs's unit, on the same clock */
function hrMs(at) {
  return Number(BigInt(at)) / 1e6;
}

function nodeFlags(dir, peers) {
  return { dir, httpPort: 0, clusterSecret: SECRET, peers, heartbeat: 1000, linkTimeout: 5000, adminPassword: ADMIN_PASSWORD };
}

const syncUrl = (node) => `${node.url.replace(/^http/, 'ws')}/sync`;

/** Whether a node has at least `min` peers and every one of them is live. */
function allLive(peers, min = 1) {
  return peers.length >= min && peers.every((p) => p.state === 'live');
}

/** Runs issue(i) for i in [0, count) at `perSec` per second, not waiting for one before the next; returns seconds. */
async function paced(count, perSec, issue) {
  const t0 = nowMs();
  const pending = [];
  let i = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(count, Math.floor(((nowMs() - t0) * perSec) / 1000) + 1);
      while (i < due) pending.push(issue(i++));
      if (i >= count) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(pending);
  return (nowMs() - t0) / 1000;
}

/** Checks that a few hundred objects spread over the id list have the same merged state on the store here and the child node. */
async function checkSame(src, child, ids, what) {
  const step = Math.max(1, Math.floor(ids.length / 300));
  const sample = ids.filter((_, i) => i % step === 0);
  const [theirs, mine] = await Promise.all([child.versions(sample), Promise.all(sample.map(async (id) => (await src.get(id))?.version))]);
  for (let i = 0; i < sample.length; i++) {
    if (theirs[i] === null || mine[i] !== theirs[i]) throw new Error(`${what}: object ${sample[i]} differs (${mine[i]} vs ${theirs[i]})`);
  }
}

/** bulkDocs in chunks; returns the new revs in order. */
async function pouchWrite(db, docs) {
  const revs = [];
  for (let i = 0; i < docs.length; i += 1000) {
    const res = await db.bulkDocs(docs.slice(i, i + 1000));
    for (const r of res) {
      if (!r.ok) throw new Error(`PouchDB bulkDocs failed: ${JSON.stringify(r)}`);
      revs.push(r.rev);
    }
  }
  return revs;
}

function printTop(log, top, file) {
  log(`  CPU profile of the receiving node's process (its figure includes profiler overhead), top self time:`);
  for (const x of top) log(`  ${fmt(x.pct, 1).padStart(5)}%  ${x.fn}`);
  log(`  full profile: ${file}`);
}
