// Anti-entropy between two stores in this process, through two SyncSessions
// wired back to back (every frame encoded and decoded as on the wire, no
// socket): B is cloned from A; A then takes single-field updates on some
// of its objects and trims its feed, so B can catch up only by anti-entropy.
//
// Reported per case: the time until both sessions are live, the bytes of
// the `need` pages (B's state vectors) and of the `states` frames (A's
// diffs), and what whole records of every object in the differing buckets
// would weigh (what protocol 4 sent). No issue sets a target here.
import { Store, loadSchemaFile } from '@meridian/store';
import { decodeFrame, encodeFrame, runActions, storeSessionOptions, SyncSession } from '@meridian/sync';
import { DEFAULT_SCHEMA, generateSample } from '@meridian/node';
import { fmt, printTable, tempDirs } from './lib.js';

export const name = 'anti-entropy';

export async function run({ quick, log }) {
  const persons = quick ? 2_000 : 20_000;
  const schema = loadSchemaFile(DEFAULT_SCHEMA);
  const sample = generateSample({ size: persons, seed: 11 });
  const { fresh, removeAll } = tempDirs();
  const rows = [['case', 'objects', 'differing buckets', 'ms', 'need bytes', 'states bytes', 'whole records bytes', 'sent / whole']];
  const cases = [];
  try {
    for (const share of [0.001, 0.1]) {
      const a = await Store.open({ dir: fresh('ae-a'), schema, nodeId: 'a' });
      const b = await Store.open({ dir: fresh('ae-b'), schema, nodeId: 'b' });
      try {
        for (let i = 0; i < sample.length; i += 256) {
          await Promise.all(sample.slice(i, i + 256).map((o) => a.create(o.type, o.fields, { id: o.id })));
        }
        const snap = a.stateSnapshot();
        for await (const batch of snap.batches(500)) await b.cloneStates(batch);
        await b.cloneStates([], { peer: 'a', head: snap.head, vector: snap.vector });
        await snap.close();

        const people = sample.filter((o) => o.type === 'Person');
        const updated = people.filter((_, i) => i % Math.round(1 / share) === 0);
        for (let i = 0; i < updated.length; i += 256) {
          await Promise.all(updated.slice(i, i + 256).map((p, j) => a.update(p.id, { title: `Title ${i + j}` })));
        }
        await a.trimFeed(1);

        const [da, db] = [await a.digest(8), await b.digest(8)];
        const differing = new Set(da.buckets.flatMap((x, i) => (x.hash === db.buckets[i].hash ? [] : [i])));
        let whole = 0;
        const all = a.stateSnapshot();
        for await (const batch of all.batches(1000, { buckets: differing, bits: 8, have: new Map() })) for (const s of batch) whole += s.record.length + s.id.length + 8;
        await all.close();

        const { ms, bytes } = await antiEntropy(a, b);
        const [fa, fb] = [await a.digest(8), await b.digest(8)];
        if (JSON.stringify(fa.buckets) !== JSON.stringify(fb.buckets)) throw new Error('the stores differ after anti-entropy');
        const label = `${fmt(updated.length)} updated`;
        rows.push([label, fmt(sample.length), fmt(differing.size), fmt(ms), fmt(bytes.need), fmt(bytes.states), fmt(whole), `${fmt((bytes.need + bytes.states) / whole, 3)}`]);
        cases.push({ objects: sample.length, updated: updated.length, differingBuckets: differing.size, ms, needBytes: bytes.need, statesBytes: bytes.states, diffs: bytes.diffs, records: bytes.records, wholeRecordsBytes: whole });
      } finally {
        await a.close();
        await b.close();
      }
    }
    printTable(rows, log);
    return { metrics: { cases }, checks: [] };
  } finally {
    removeAll();
  }
}

/** Runs A's and B's sessions back to back until both are live; counts the frames' bytes. */
async function antiEntropy(a, b) {
  const bytes = { need: 0, states: 0, diffs: 0, records: 0 };
  const ends = [];
  let failed;
  const end = (store, dialed) => {
    const e = { queue: Promise.resolve() };
    e.io = {
      store,
      session: new SyncSession({
        ...storeSessionOptions(store),
        empty: () => false, // B holds its clone: anti-entropy, never a second clone
        cluster: 'bench',
        secret: 'bench-secret',
        role: 'master',
        dialed,
        nonce: crypto.getRandomValues(new Uint8Array(16)),
      }),
      send: (frame) => {
        const enc = encodeFrame(frame);
        if (frame.t === 'need' || frame.t === 'states') bytes[frame.t] += enc.length;
        if (frame.t === 'states') for (const o of frame.objects) if (!o.p) bytes[o.u ? 'diffs' : 'records']++;
        const other = ends.find((o) => o !== e);
        setImmediate(() => {
          other.queue = other.queue.then(() => runActions(other.io, other.io.session.receive(decodeFrame(enc))));
        });
        return true;
      },
      opened: () => true,
      closed: (reason) => void (failed = reason),
      later: (actions) => {
        e.queue = e.queue.then(() => runActions(e.io, actions));
      },
    };
    ends.push(e);
    return e;
  };
  const t0 = performance.now();
  const x = end(a, true);
  const y = end(b, false);
  void runActions(x.io, x.io.session.start(0));
  void runActions(y.io, y.io.session.start(0));
  while (!(x.io.session.live && y.io.session.live)) {
    if (failed) throw new Error(`anti-entropy session closed: ${failed}`);
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all([x.queue, y.queue]);
  return { ms: performance.now() - t0, bytes };
}
