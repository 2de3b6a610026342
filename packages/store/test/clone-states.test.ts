// Cloning by object states, frame after frame without waiting for each
// frame's fsync (cloneStatesStaged), then the last frame with the peer's
// vector (cloneStates with `done`).
import t from 'tap';
import * as Y from 'yjs';
import { decode, encode } from '../dist/codec.js';
import { docVersion } from '../dist/yobject.js';
import { checkIndexes, Store, type ClonedState } from '../dist/index.js';
import { delayBatches, openStore, schema, tempDir } from './fixtures.js';

async function statesOf(store: Store, batch: number): Promise<{ frames: ClonedState[][]; head: number; vector: Record<string, number> }> {
  const snap = store.stateSnapshot();
  const frames: ClonedState[][] = [];
  for await (const f of snap.batches(batch)) frames.push(f);
  const { head, vector } = snap;
  await snap.close();
  return { frames, head, vector };
}

t.test('frames staged back to back reach the disk in order, and the last moves the vector only after them', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const orgs = await Promise.all(Array.from({ length: 40 }, (_, i) => a.create('Org', { name: `org ${i}`, kind: 'customer' })));
  const people = await Promise.all(orgs.map((o, i) => a.create('Person', { cn: `P ${i}`, sn: 'P', mail: [`p${i}@example.com`], org: o.id })));
  const { frames, head, vector } = await statesOf(a, 10);
  t.equal(frames.length, 8);

  const dir = tempDir(t);
  const b = await Store.open({ dir, schema, nodeId: 'b' });
  const order: number[] = [];
  const staged = [];
  for (const [i, f] of frames.entries()) {
    const { durable } = await b.cloneStatesStaged(f);
    staged.push(durable.then(() => void order.push(i)));
  }
  t.same(b.versionVector(), {}, 'the vector claims nothing while states are on their way to disk');
  await b.cloneStates([], { peer: 'a', head, vector });
  t.same(order, frames.map((_, i) => i), 'every staged frame was on disk, in order, before the last one returned');
  t.same(b.versionVector(), vector, "then the vector is the peer's");
  await Promise.all(staged);
  t.equal((await b.lookup('Person', 'mail', 'p7@example.com')).items[0]?.id, people[7]!.id, 'unique values are indexed');
  await b.close();

  const again = await Store.open({ dir, schema, nodeId: 'b' });
  t.teardown(() => again.close());
  t.same(again.versionVector(), vector, 'the vector is on disk');
  let missing = 0;
  for (const o of [...orgs, ...people]) if (!(await again.get(o.id))) missing++;
  t.equal(missing, 0, 'every cloned object is on disk');
});

t.test('a unique value held by objects in two frames staged back to back stays with the first', async (t) => {
  // two masters took the same address concurrently: a peer's snapshot may hold both
  const a = await openStore(t, { nodeId: 'a' });
  const c = await openStore(t, { nodeId: 'c' });
  const first = await a.create('Person', { cn: 'First', sn: 'F', mail: ['same@example.com'] });
  const second = await c.create('Person', { cn: 'Second', sn: 'S', mail: ['same@example.com'] });
  await a.applyRemote((await c.readFeed(0, 10)).map(({ seq: _s, ...e }) => e));
  const { frames } = await statesOf(a, 1);
  const byId = new Map(frames.flat().map((s) => [s.id, s]));
  const b = await openStore(t, { nodeId: 'b' });
  const one = await b.cloneStatesStaged([byId.get(first.id)!]);
  const two = await b.cloneStatesStaged([byId.get(second.id)!]);
  await Promise.all([one.durable, two.durable]);
  const holders = (await b.lookup('Person', 'mail', 'same@example.com')).items.map((o) => o.id);
  t.same(holders, [first.id], 'the first staged keeps the index entry');
  t.ok(await b.get(second.id), 'the second is stored all the same');
});

t.test('states merged onto objects held here are on disk before the last frame moves the vector', async (t) => {
  // anti-entropy's case: the frames' objects are held here already, so each is merged under its lock
  const a = await openStore(t, { nodeId: 'a' });
  const orgs = await Promise.all(Array.from({ length: 30 }, (_, i) => a.create('Org', { name: `org ${i}`, kind: 'customer' })));
  const b = await openStore(t, { nodeId: 'b' });
  await b.applyRemote((await a.readFeed(0, 100)).map(({ seq: _s, ...e }) => e));
  await Promise.all(orgs.map((o, i) => a.update(o.id, { name: `renamed ${i}` })));
  const { frames, head, vector } = await statesOf(a, 10);
  const settled: number[] = [];
  for (const [i, f] of frames.entries()) {
    const { durable } = await b.cloneStatesStaged(f);
    void durable.then(() => void settled.push(i));
  }
  await b.cloneStates([], { peer: 'a', head, vector });
  t.same(settled, [0, 1, 2], 'every merged frame was on disk before the last one returned');
  let stale = 0;
  for (const [i, o] of orgs.entries()) if ((await b.get(o.id))!.fields.name !== `renamed ${i}`) stale++;
  t.equal(stale, 0, "every object holds the peer's rename");
});

t.test('a frame refused at once settles only after the frames staged before it', async (t) => {
  // a peer's state holding items of this node's own clientID is refused as soon as it is merged;
  // its failure must not be reported before the earlier frames are on disk (each is a batch of its own)
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const orgs = await Promise.all(Array.from({ length: 2000 }, (_, i) => a.create('Org', { name: `org ${i}`, kind: 'customer' })));
  // b holds them already, so the frames below are merges, each reaching the disk in a batch of
  // its own well after the refused frame's (empty) batch is queued: only the ordering of the
  // frames themselves keeps the refusal behind them
  for (const f of (await statesOf(a, 400)).frames) await b.cloneStates(f);
  await Promise.all(orgs.map((o, i) => a.update(o.id, { name: `renamed ${i}` })));
  const { frames } = await statesOf(a, 400);
  t.equal(frames.length, 5);
  const mine = await b.create('Org', { name: 'Acme', kind: 'customer' });
  const doc = new Y.Doc();
  Y.applyUpdate(doc, (await b.readFeed(0, 10)).find((e) => e.id === mine.id)!.update);
  doc.clientID = b.clientId;
  doc.getMap('f').set('name', 'Acme by another');
  const forged = { t: 'Org', f: { name: 'Acme by another', kind: 'customer' }, d: false, h: mine.hlc + 1, s: 1, v: docVersion(doc), y: Y.encodeStateAsUpdate(doc) };
  const order: string[] = [];
  const earlier: Promise<void>[] = [];
  for (const [i, f] of frames.entries()) earlier.push((await b.cloneStatesStaged(f)).durable.then(() => void order.push(`frame ${i} on disk`)));
  const refused = await b.cloneStatesStaged([{ id: mine.id, record: encode(forged) }]);
  await t.rejects(refused.durable.finally(() => void order.push('forged frame refused')), /which b drew itself/);
  await Promise.all(earlier);
  t.same(order, [...frames.map((_, i) => `frame ${i} on disk`), 'forged frame refused'], 'in the order they were staged');
});

t.test("a frame with a malformed purge marker or record is refused whole, before anything in it is applied", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const doomed = await a.create('Org', { name: 'Doomed', kind: 'customer' });
  const kept = await a.create('Org', { name: 'Kept', kind: 'customer' });
  const b = await openStore(t, { nodeId: 'b' });
  const { frames, head, vector } = await statesOf(a, 100);
  await b.cloneStates(frames.flat(), { peer: 'a', head, vector });
  const seqBefore = b.lastSeq;
  const vectorBefore = b.versionVector();
  const good = { h: Date.now() * 1000, p: 'admin', o: 'a', n: 9, t: 'Org' };
  // each would be stored as given: an origin no vector may hold, a clock beyond safe integers, a type no schema names
  const bad: Record<string, unknown>[] = [
    { ...good, o: 'bad id!' },
    { ...good, h: Infinity },
    { ...good, h: 2 ** 53 },
    { ...good, h: -1 },
    { ...good, t: 'not a type' },
    { ...good, p: 'x'.repeat(257) },
  ];
  for (const marker of bad) {
    await t.rejects(
      b.cloneStatesStaged([
        { id: doomed.id, record: encode(good), purged: true },
        { id: kept.id, record: encode(marker), purged: true },
      ]),
      { message: `the purge marker of ${kept.id} is not a purge record` },
      JSON.stringify(marker, (_k, v: unknown) => (v === Infinity ? 'Infinity' : v)),
    );
  }
  t.ok(await b.get(doomed.id), 'the good marker before the bad one purged nothing');
  t.equal(b.lastSeq, seqBefore, 'nothing went into the feed');
  t.same(b.versionVector(), vectorBefore, 'nor into the vector');

  const record = (await statesOf(a, 100)).frames.flat().find((s) => s.id === kept.id) as { id: string; record: Uint8Array };
  const { decode } = await import('../dist/codec.js');
  for (const h of [Infinity, 1e300, 2 ** 53, -5]) {
    const forged = encode({ ...decode<Record<string, unknown>>(record.record), h });
    await t.rejects(b.cloneStatesStaged([{ id: 'org-forged0000', record: forged }]), { message: 'cloned object org-forged0000 is not an object record' }, `a record with HLC ${h}`);
  }
  const next = await b.create('Org', { name: 'After', kind: 'vendor' });
  t.ok(next.hlc <= (Date.now() + 1000) * 1000, 'the clock stayed at the wall clock');
});

t.test("a node named as a member of Object.prototype is an origin like any other in the feed base and the snapshot's head", async (t) => {
  const b = await openStore(t, { nodeId: 'b' });
  await b.cloneStates([], { peer: 'constructor', head: 0, vector: { constructor: 3, toString: 2 } });
  t.same(b.feedBase(), { constructor: 3, toString: 2 }, 'not NaN, from a function read off the prototype');
  const { vectorEntry } = await import('../dist/version-vector.js');
  t.equal(vectorEntry({}, 'constructor'), 0);
  t.equal(vectorEntry({ valueOf: 4 }, 'valueOf'), 4);
});

t.test('a clone carries the idempotency records of keyed writes, with their origin, and keeps a record held here already', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const made = await a.create('Org', { name: 'Keyed', kind: 'customer' }, { idempotencyKey: 'fwd/laptop-1/k1' });
  await a.update(made.id, { name: 'Keyed 2' }, { idempotencyKey: 'api/admin/k2' });
  const mine = await a.create('Org', { name: 'Unkeyed', kind: 'vendor' });
  const b = await openStore(t, { nodeId: 'b' });
  // b made a write of its own under one of the keys (its records of keys stay its own)
  await b.create('Org', { name: 'B', kind: 'vendor' }, { idempotencyKey: 'api/admin/k2' });
  const ownRecord = await b.idempotent('api/admin/k2');
  const { frames, head, vector } = await statesOf(a, 100);
  const keyed = frames.flat().filter((s): s is Extract<ClonedState, { key: string }> => 'key' in s);
  t.same(keyed.map((k) => [k.key, k.origin, k.originSeq]), [['api/admin/k2', 'a', 2], ['fwd/laptop-1/k1', 'a', 1]], 'in key order, with origin and origin seq');
  await b.cloneStates(frames.flat(), { peer: 'a', head, vector });
  t.match(await b.idempotent('fwd/laptop-1/k1'), { id: made.id, origin: 'a', originSeq: 1 }, "a resend reaching b is answered from a's record");
  t.same(await b.idempotent('api/admin/k2'), ownRecord, 'a key recorded here keeps its record');
  t.notOk(keyed.some((k) => k.record && (decode(k.record) as { id?: string }).id === mine.id), 'an unkeyed write leaves no record to send');

  const bad: Record<string, unknown>[] = [{ id: 'bad id!', origin: 'a', originSeq: 1, hlc: 1 }, { id: made.id, originSeq: 1, hlc: 1 }, { id: made.id, origin: 'a', originSeq: 0, hlc: 1 }, { id: made.id, origin: 'a', originSeq: 1, hlc: Infinity }];
  for (const w of bad) {
    await t.rejects(b.cloneStates([{ key: 'fwd/x/y', record: encode(w) }], { peer: 'a', head, vector }), { message: 'the idempotency record of key "fwd/x/y" is not one' });
  }
  await t.rejects(b.cloneStatesStaged([{ key: 'fwd/x/y', record: encode(bad[0]) }]), { message: 'the idempotency record of key "fwd/x/y" is not one' }, 'before the last frame too');
  t.equal(await b.idempotent('fwd/x/y'), undefined, 'nothing stored of them');
  // a record handed over with a frame before the last (its object passed by the run) is stored once that frame's states are on disk
  const good = { id: made.id, origin: 'a', originSeq: 1, hlc: 1 };
  const { durable } = await b.cloneStatesStaged([{ key: 'fwd/x/z', record: encode(good) }]);
  await durable;
  t.same(await b.idempotent('fwd/x/z'), good, 'stored');
  const mineAgain = await b.idempotent('api/admin/k2');
  await (await b.cloneStatesStaged([{ key: 'api/admin/k2', record: encode(good) }])).durable;
  t.same(await b.idempotent('api/admin/k2'), mineAgain, 'and a key recorded here keeps its record then too');
});

t.test("a frame's records wait for every earlier frame of their run: none is stored after one failed, and the frame fails too; another run's are", async (t) => {
  const b = await openStore(t, { nodeId: 'b' });
  const record = (id: string): Uint8Array => encode({ id, origin: 'a', originSeq: 1, hlc: 1 });
  const run = {};
  // a diff of an object b does not hold fails its frame
  const failed = await b.cloneStatesStaged([{ id: 'org-x', diff: Uint8Array.from([0, 0]), hlc: 1 }], { run }).catch((e: unknown) => ({ durable: Promise.reject(e) }));
  const next = await b.cloneStatesStaged([{ key: 'fwd/x/after', record: record('org-x') }], { run });
  await failed.durable.catch(() => undefined);
  await t.rejects(next.durable, { message: /an earlier frame of this run of states was not stored/ }, 'the later frame of the run fails');
  t.equal(await b.idempotent('fwd/x/after'), undefined, 'its record was not stored');
  await t.rejects(b.cloneStates([{ key: 'fwd/x/last', record: record('org-x') }], { peer: 'a', head: 1, vector: { a: 1 } }, { run }), { message: /an earlier frame of this run of states was not stored/ }, "nor are those of the run's last frame");
  t.equal(await b.idempotent('fwd/x/last'), undefined);
  // a run of another session is not held to that one's failure
  const other = await b.cloneStatesStaged([{ key: 'fwd/y/ok', record: record('org-y') }], { run: {} });
  await other.durable;
  t.match(await b.idempotent('fwd/y/ok'), { id: 'org-y' }, "another run's record is stored");
});

t.test('a key whose record a run brings is waited for: answered from the record once stored, busy when the run ends without it or takes too long', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const made = await a.create('Org', { name: 'Keyed', kind: 'customer' }, { idempotencyKey: 'fwd/laptop-1/k1' });
  const { frames, head, vector } = await statesOf(a, 100);
  const b = await openStore(t, { nodeId: 'b', idempotencyWaitMs: 600 });
  const keyed = frames.flat().filter((s) => 'key' in s);
  const end = b.expectIdempotency(['fwd/laptop-1/k1', 'fwd/laptop-1/never']);
  t.equal(await b.idempotent('fwd/laptop-1/other'), undefined, 'a key no run brings is answered at once');
  let answered = false;
  const waiting = b.idempotent('fwd/laptop-1/k1').finally(() => void (answered = true));
  const lost = b.idempotent('fwd/laptop-1/never');
  await b.cloneStates(frames.flat().filter((s) => !('key' in s)));
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(answered, 'the resend waits while the states are in and the record is not');
  await b.cloneStates(keyed, { peer: 'a', head, vector });
  end();
  t.match(await waiting, { id: made.id, origin: 'a', originSeq: 1 }, 'then it is answered from the record');
  await t.rejects(lost, { code: 'busy', message: 'the first copy of this write was made on another master, and its record is still on its way here; send the write again in a few seconds' }, 'a key the run ended without storing is busy');
  t.equal(await b.idempotent('fwd/laptop-1/never'), undefined, 'after that the key is not waited for');

  const started = performance.now();
  const endSlow = b.expectIdempotency(['fwd/laptop-1/slow']);
  await t.rejects(b.idempotent('fwd/laptop-1/slow'), { code: 'busy' }, 'a run that takes too long answers busy');
  const waited = performance.now() - started;
  t.ok(waited >= 590 && waited < 3000, `after the store's wait, here 600 ms (${Math.round(waited)} ms)`);
  endSlow();
});

t.test('two runs bringing one key: the end of one without it leaves the wait to the other; a key recorded already is answered without a wait; close ends every wait', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const made = await a.create('Org', { name: 'Keyed', kind: 'customer' }, { idempotencyKey: 'fwd/laptop-1/k1' });
  const { frames, head, vector } = await statesOf(a, 100);
  const dir = tempDir(t);
  const b = await Store.open({ dir, schema, nodeId: 'b' });
  const fromA = b.expectIdempotency(['fwd/laptop-1/k1']);
  const fromC = b.expectIdempotency(['fwd/laptop-1/k1']);
  const waiting = b.idempotent('fwd/laptop-1/k1');
  fromC(); // c's run is cut short
  await b.cloneStates(frames.flat(), { peer: 'a', head, vector });
  fromA();
  t.match(await waiting, { id: made.id, origin: 'a' }, "answered from a's run, though c's ended first without it");
  const late = b.expectIdempotency(['fwd/laptop-1/k1']);
  const started = performance.now();
  t.match(await b.idempotent('fwd/laptop-1/k1'), { id: made.id }, 'a key already recorded when a run expects it (the record is read before any wait)');
  t.ok(performance.now() - started < 1000, 'is answered at once');
  late();
  const pending = b.expectIdempotency(['fwd/laptop-1/k9']);
  const cut = b.idempotent('fwd/laptop-1/k9').catch((e: unknown) => e);
  const closing = performance.now();
  await b.close();
  t.match(await cut, { code: 'closed' }, 'a wait ends when the store closes');
  t.ok(performance.now() - closing < 1000, 'at once');
  pending();
});

t.test('a write that changes nothing on a cloned object answers once the clone\'s batch is on disk', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const o = await a.create('Org', { name: 'Acme', kind: 'customer' });
  const { frames } = await statesOf(a, 10);
  const b = await openStore(t, { nodeId: 'b' });
  // the clone's batch is held back 200 ms on its way to disk
  let landed = false;
  delayBatches(b, () => 200, () => (landed = true));
  const { durable } = await b.cloneStatesStaged(frames.flat().filter((s) => !('key' in s)));
  await b.update(o.id, { name: 'Acme' });
  t.ok(landed, 'the answer came after the batch that holds the object');
  await durable;
});

t.test('a resend waiting for a record a run brings is answered as soon as the record is stored, before the run ends', async (t) => {
  const b = await openStore(t, { nodeId: 'b' });
  const end = b.expectIdempotency(['fwd/x/k']);
  t.teardown(end);
  const started = performance.now();
  const answer = b.idempotent('fwd/x/k');
  // a frame of a run hands the record over: its object was passed
  await (await b.cloneStatesStaged([{ key: 'fwd/x/k', record: encode({ id: 'org-k', origin: 'a', originSeq: 1, hlc: 1 }) }], { run: {} })).durable;
  t.match(await answer, { id: 'org-k' }, 'answered from the record');
  t.ok(performance.now() - started < 2000, `without waiting for the run's end or the 5 s (${Math.round(performance.now() - started)} ms)`);
});

t.test('states stored without feed entries move the change mark, which caches of worked-out access rely on', async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  const org = await a.create('Org', { name: 'Moved', kind: 'customer' });
  const first = await statesOf(a, 100);
  await b.cloneStates(first.frames.flat(), { peer: 'a', head: first.head, vector: first.vector });
  const seq = b.lastSeq;
  const mark = b.changeMark;
  // a changes the object; b takes the change as a merged state (anti-entropy), with no feed entry
  await a.update(org.id, { kind: 'reseller' });
  const again = await statesOf(a, 100);
  await b.cloneStates(again.frames.flat());
  t.equal((await b.get(org.id))?.fields['kind'], 'reseller', 'the merged state is read');
  t.equal(b.lastSeq, seq, 'the feed did not move');
  t.ok(b.changeMark > mark, `the change mark did (${mark} -> ${b.changeMark})`);
  const local = b.changeMark;
  await b.update(org.id, { name: 'Moved again' });
  t.ok(b.changeMark > local, 'and so does a feed entry');
});

t.test("a merged state this node holds already, in a change still on its way to disk, is stored only once that change is", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  await a.create('Org', { name: 'Acme', kind: 'customer' });
  const b = await openStore(t, { nodeId: 'b' });
  // b applies a's change, whose batch is held back 300 ms on its way to disk
  let landed = false;
  delayBatches(b, (n) => (n === 0 ? 300 : 0), (n) => (landed ||= n === 0));
  const { durable } = await b.applyRemoteStaged((await a.readFeed(0)).map(({ seq: _s, ...c }) => c));
  // an anti-entropy run brings the same state meanwhile: nothing new, but not on disk yet either
  const { frames } = await statesOf(a, 10);
  await b.cloneStates(frames.flat().filter((s) => !('key' in s)));
  // (the frame's batch queues after that change's in the group commit, though it writes nothing of this object)
  t.ok(landed, "the run's states count as stored only after the change holding them is");
  await durable;
});

t.test('a record that arrives while another frame stores the same object, on disk and gone from the cache before this frame looks, is merged, not stored over it', async (t) => {
  // cloned from two peers at once: p2 is behind p1 on the object, and p2's frame reads first but slowly
  const p1 = await openStore(t, { nodeId: 'p1' });
  const x = await p1.create('Org', { name: 'v1', kind: 'customer' });
  const behind = (await statesOf(p1, 500)).frames.flat().find((s) => s.id === x.id)!;
  await p1.update(x.id, { name: 'v2' });
  const current = await statesOf(p1, 500);
  const ahead = current.frames.flat().find((s) => s.id === x.id)!;
  // a cache of one byte: a slot goes as soon as nothing pins it
  const n = await openStore(t, { nodeId: 'n', cacheBytes: 1 });
  const db = (n as unknown as { db: { getMany: (keys: string[], o?: unknown) => Promise<unknown[]> } }).db;
  const getMany = db.getMany.bind(db);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let holdNext = true;
  db.getMany = async (keys, o) => {
    const found = await getMany(keys, o);
    if (holdNext && keys.includes(`o${x.id}`)) {
      holdNext = false;
      await held;
    }
    return found;
  };
  const fromP2 = n.cloneStatesStaged([behind], { clone: true, run: {} });
  await new Promise((r) => setTimeout(r, 20));
  await (await n.cloneStatesStaged([ahead], { clone: true, run: {} })).durable;
  release();
  await (await fromP2).durable;
  await n.cloneStates([], { peer: 'p1', head: current.head, vector: current.vector }, { clone: true, run: {} });
  const got = await n.get(x.id);
  t.equal(got?.fields['name'], 'v2', "p1's change, which the vector now claims, is held");
  t.equal(got?.version, (await p1.get(x.id))?.version, 'and n has the version p1 has');
  t.same(await checkIndexes(n), [], 'with its index entries and count once');
});

t.test("a snapshot whose vector holds more of the receiver's own changes than it made is refused, and claims nothing", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  const b = await openStore(t, { nodeId: 'b' });
  await b.create('Org', { name: 'Mine', kind: 'vendor' });
  await a.create('Org', { name: 'Theirs', kind: 'vendor' });
  const snap = a.stateSnapshot();
  const frames: ClonedState[][] = [];
  for await (const f of snap.batches(100)) frames.push(f);
  await snap.close();
  await t.rejects(b.cloneStates(frames.flat(), { peer: 'a', head: snap.head, vector: { ...snap.vector, b: 5 } }), {
    message: "a's snapshot holds changes of b up to 5, and b itself only up to 1: this data dir is older than the changes it made (a copy put back, or a disk that lost writes); start it on an empty --dir under a new --node-id, or restore a backup",
  });
  t.equal(b.versionVector()['b'], 1, 'its own entry as it was');
  t.equal(b.versionVector()['a'] ?? 0, 0, "and nothing of a's claimed");
  t.equal((await b.list('Org')).items.filter((o) => o.fields['name'] === 'Theirs').length, 0, 'nor any of its states stored');
  // the same claim made as a change held ahead of a gap
  await t.rejects(b.cloneStates(frames.flat(), { peer: 'a', head: snap.head, vector: snap.vector, ahead: [['b', 3]] }), {
    message: /^a's snapshot holds changes of b up to 3, and b itself only up to 1: this data dir is older/,
  });
  t.same(b.versionVector(), { b: 1 }, 'which claims nothing either');
});

t.test('a change held ahead of a gap whose feed entry was trimmed reaches a clone as held ahead, and from it the next clone', async (t) => {
  const x = await openStore(t, { nodeId: 'x' });
  const n = await openStore(t, { nodeId: 'n' });
  const org = await x.create('Org', { name: 'O1', kind: 'vendor' });
  for (let i = 2; i <= 5; i++) await x.update(org.id, { name: `O${i}` });
  const entries = (await x.readFeed(0, 100)).map(({ seq: _s, ...c }) => c);
  t.equal(entries.length, 5);
  // n gets x#1-3 and x#5: x#5 is held ahead of the gap at 4
  await n.applyRemote(entries.filter((e) => e.originSeq !== 4));
  t.equal(n.versionVector()['x'], 3);
  await n.create('Org', { name: 'Later', kind: 'vendor' });
  await n.trimFeed(1); // x#5's feed entry on n is gone
  t.ok(n.firstSeq() > 4);

  const cloneFrom = async (from: Store, dir?: string): Promise<Store> => {
    const to = await openStore(t, { nodeId: `c${Math.random().toString(16).slice(2, 8)}`, ...(dir ? { dir } : {}) });
    const snap = from.stateSnapshot();
    for await (const f of snap.batches(100)) await to.cloneStates(f);
    await to.cloneStates([], { peer: from.nodeId, head: snap.head, vector: snap.vector, ahead: snap.ahead });
    await snap.close();
    return to;
  };
  const snap = n.stateSnapshot();
  t.same(snap.ahead, [['x', 5]], "n's snapshot names x#5, whose feed entry it no longer has");
  await snap.close();
  const dir = tempDir(t);
  let s = await cloneFrom(n, dir);
  t.equal(s.versionVector()['x'], 3, 'the clone holds x up to 3');
  t.equal(s.feedBase()['x'], 3, "its feed base stays at the snapshot's vector: a peer holding x#5 ahead as well must not look as if it lacked it");
  t.equal((await s.get(org.id))?.fields['name'], 'O3', "x#5's content waits in the state for x#4, as Yjs holds it pending");
  const next = await cloneFrom(s);
  t.equal(next.versionVector()['x'], 3);
  // x#4 arrives: the entry moves on over x#5, held ahead, on the clone and the clone's clone
  const four = entries.filter((e) => e.originSeq === 4);
  for (const store of [s, next]) {
    await store.applyRemote(four);
    t.equal(store.versionVector()['x'], 5, `${store.nodeId} holds x up to 5 once x#4 is in`);
    t.equal((await store.get(org.id))?.fields['name'], 'O5', 'and shows x#5');
    t.equal(store.feedBase()['x'], 5, 'and its feed base passes x#5, which no feed entry of its carries');
  }
  // kept across a restart
  const restarted = await cloneFrom(n, tempDir(t));
  const id = restarted.nodeId;
  const rdir = restarted.dir;
  await restarted.close();
  const again = await openStore(t, { nodeId: id, dir: rdir });
  await again.applyRemote(four);
  t.equal(again.versionVector()['x'], 5, 'held ahead across a restart');
  t.equal(again.feedBase()['x'], 5);
  await s.close();
  s = await openStore(t, { nodeId: s.nodeId, dir });
  t.same([s.versionVector()['x'], s.feedBase()['x']], [5, 5], 'the raised base is on disk');
  await s.close();

  // a key of a change held ahead with no feed entry that the vector covers already at open (as an older build
  // could leave it): the base passes it at once (the batch that next moves x's entry drops the key and puts it)
  const { Level } = await import('level');
  const { keys } = await import('../dist/keys.js');
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.batch([
    { type: 'put', key: keys.ahead('x', 6), value: encode(0) },
    { type: 'put', key: keys.vector('x'), value: encode(6) },
  ]);
  await db.close();
  s = await openStore(t, { nodeId: s.nodeId, dir });
  t.equal(s.feedBase()['x'], 6, 'raised at open');
});

t.test("a snapshot taken while a run's last batch is on its way to disk does not claim the run: its vector moves with that batch, and the run's idempotency records with it", async (t) => {
  const a = await openStore(t, { nodeId: 'a' });
  for (let i = 0; i < 50; i++) await a.create('Org', { name: `Keyed ${i}`, kind: 'customer' }, { idempotencyKey: `fwd/laptop-1/k${i}` });
  const { frames, head, vector } = await statesOf(a, 1000);
  const states = frames.flat();
  const b = await openStore(t, { nodeId: 'b' });
  const run = {};
  await (await b.cloneStatesStaged(states.filter((s) => !('key' in s)), { run })).durable;
  // every batch of b held back 50 ms on its way to disk, so that snapshots surely fall in the window
  let writing = 0;
  delayBatches(
    b,
    () => (writing++, 50),
    () => writing--,
  );
  // snapshots of b, one each turn of the event loop while the last frame (the records) is stored
  const seen: { vector: number; keys: number; during: boolean }[] = [];
  let ended = false;
  const polls: Promise<void>[] = [];
  const poll = (): void => {
    if (ended) return;
    const snap = b.stateSnapshot();
    const during = writing > 0;
    polls.push(
      (async () => {
        let keys = 0;
        for await (const f of snap.batches(1000)) keys += f.filter((s) => 'key' in s).length;
        seen.push({ vector: snap.vector['a'] ?? 0, keys, during });
        await snap.close();
      })(),
    );
    setImmediate(poll);
  };
  setImmediate(poll);
  await b.cloneStates(states.filter((s) => 'key' in s), { peer: 'a', head, vector }, { run });
  poll();
  // (seen fills as reads finish, not as they began: the one taken after the return is the last begun)
  const after = polls.at(-1)!;
  ended = true;
  await Promise.all(polls);
  await after;
  t.ok(seen.some((s) => s.during), `some of the ${seen.length} snapshots were taken while the last batch was on its way to disk`);
  t.same(seen.filter((s) => s.vector > 0 && s.keys < 50), [], 'none claims the run without its records');
  t.ok(seen.some((s) => !s.during && s.vector === 50 && s.keys === 50), 'the one taken once it returned claims it, with them');
});
